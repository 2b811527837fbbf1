"""SinSR (CVPR 2024): ``distill`` = |S(x_T, T-1) - x0_teacher|^2; ``inverse`` = |S(x0_teacher, 0) - x_T|^2 (the
same network, timestep 0 selects the reverse direction; its input is scaled with the T-1 factor as in the
authors' code); ``consistency`` = |S(stopgrad(S(x0_gt, 0)), T-1) - x0_gt|^2 (GT latent, unquantized). 1/1/1."""

from __future__ import annotations

from .resshift_student import ResShiftStudentMethod


class SinSRMethod(ResShiftStudentMethod):
    name = "sinsr"
    summary = "SinSR: distillation + inverse + consistency-preserving losses"
    paper = "Wang et al., SinSR: Diffusion-Based Image Super-Resolution in a Single Step, CVPR 2024"
    loss_weights = {"distill": 1.0, "inverse": 1.0, "consistency": 1.0}

    def loss_terms(self, lq, hq, clean=None):
        return self.sinsr_terms(self.prepare(lq, hq), hq), None
