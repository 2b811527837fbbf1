"""The ``lite`` family: srx's own small CPU model (embedded in the package, ``engine/lite.py``): pixel-unshuffle,
one x0 step of a small UNet, pixel-shuffle. No text, no timestep; tiles of the upsampled input in output space.
A model with a detail weight set (the default ``lite``) blends its faithful and sharp sets per image
(``--detail``; ``auto``: from the whole input's softness, before tiling: engine/detail.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .base import ModelFamily, TilePlan, output_space_plan


class LiteFamily(ModelFamily):
    name = "lite"

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.lite import OneStepLite
        from ..errors import CheckpointFormatError

        net = OneStepLite.from_checkpoint(ckpt)
        if net.has_detail != (spec.defaults.detail is not None):
            raise CheckpointFormatError(
                f"{spec.name}: " + ("its weights hold a detail set but defaults.detail is not set" if net.has_detail
                                    else f"defaults.detail is {spec.defaults.detail!r} but its weights hold no "
                                         f"detail set (detail.* tensors)"))
        return net

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        from ..engine.resize import upsample_input

        if opts.detail is not None:
            model.net.set_detail(self.detail_amount(model.net, lr, opts.detail))
        reference = upsample_input(lr.cpu(), *size)
        return output_space_plan(model, reference, opts, model.net)

    @staticmethod
    def detail_amount(net, lr, detail: str | float) -> float:
        """The sharp set's weight for this input: ``detail`` itself, or with ``auto`` the net's curve of the
        input's softness."""
        from ..engine.detail import input_softness

        if detail != "auto":
            return float(detail)
        return net.curve(input_softness(lr.cpu()))

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        rows = super().describe_defaults(spec)
        detail = spec.defaults.detail
        if detail is None:
            return rows + [("detail", "none: one weight set (no --detail)")]
        if detail == "auto":
            text = ("auto: a faithful and a sharp weight set blended per image by the input's softness (clean "
                    "inputs: the faithful set; soft camera photos: the sharp set); --detail 0..1 fixes the blend")
        elif float(detail) == 0:
            text = ("0: the faithful set alone, PSNR-oriented, no generated texture (--detail auto or 0..1 blends "
                    "in the sharp set)")
        else:
            text = f"{float(detail):g} of the sharp set, blended with the faithful set (--detail auto or 0..1)"
        return rows + [("detail", text)]

    def flops_call(self, model, tile: int):
        import torch

        x = torch.zeros(1, 3, tile, tile, device=model.device)
        return lambda: model.net(x)


FAMILY = LiteFamily()


# ----------------------------------------------------------------------------- srx models combine
# One lite model from two: a faithful and a sharp weight set, blended per image. The two must be one architecture
# fine-tuned from one ancestor (ESRGAN's network interpolation blends weights, Wang et al., ECCV-W 2018, sec.
# 3.4): in srx, a pixel-loss run and an adversarial run (``srx train --method lite``) from the same student. The
# result is a model directory whose ``net.*`` tensors are the faithful set and whose ``detail.*`` tensors are the
# sharp set, with the ``auto`` curve in its ``checkpoint.net``; ``--detail 0`` runs the faithful model exactly. A
# two-set model given as the faithful one (``lite-faithful``) gives its faithful set: the shipped lite is
# ``srx models combine lite-faithful SHARP``.

# The shipped lite's curve: input softness -1.2 (RealSR's camera LR is about -1.5 to -0.9, DRealSR's -2.4 to
# -1.4) gets the sharp set, -0.9 and above (bicubic downsamplings and clean photo crops: -1.1 to -0.5) the
# faithful one (README, "The sharp lite").
DEFAULT_CURVE = {"soft": -1.2, "clean": -0.9, "top": 1.0}  # engine.detail.DetailCurve's fields


def combine_detail(faithful: str, sharp: str, output: Path, curve: dict[str, float] | None = None) -> Path:
    """Write the two-set model of the lite models ``faithful`` and ``sharp`` (names or directories) to ``output``."""
    from ..engine.lite import OneStepLite
    from ..models.checkpoints import ConvertedCheckpoint, write_model_dir
    from ..models.loading import load_converted_checkpoint, resolve_spec

    curve = {**DEFAULT_CURVE, **(curve or {})}
    if not curve["soft"] < curve["clean"] or not 0 < curve["top"] <= 1:
        raise UsageError(f"the detail curve needs soft < clean and 0 < top <= 1, got {curve}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"{output}: exists and is not an empty folder (nothing is overwritten)")
    sets = {}
    for role, name in (("faithful", faithful), ("sharp", sharp)):
        spec = resolve_spec(name)
        if spec.family != FAMILY.name:
            raise UsageError(f"{name}: a {spec.family} model; combine takes two lite models")
        ckpt = load_converted_checkpoint(spec, download=False)
        if role == "sharp" and ckpt.component_state("detail"):
            raise UsageError(f"{name}: holds a detail set already; give the sharp model itself")
        config = {k: v for k, v in (ckpt.net or {}).items() if k != "detail"}
        sets[role] = (spec, config, ckpt.component_state("net"))  # a two-set model: its faithful set
    (spec, config, base), (_, sharp_config, detail) = sets["faithful"], sets["sharp"]
    if sharp_config != config:
        raise UsageError(f"{sharp}: another architecture than {faithful} ({sharp_config} vs {config}); the two "
                         f"sets must be one network")
    tensors = {**{f"net.{k}": v for k, v in base.items()}, **{f"detail.{k}": v for k, v in detail.items()}}
    ckpt = ConvertedCheckpoint(tensors=tensors, net={**config, "detail": curve}, source_format="srx")
    OneStepLite.from_checkpoint(ckpt)  # both sets fit the network (a CheckpointFormatError names what does not)
    combined = replace(spec, name=output.name, weights=None, defaults=replace(spec.defaults, detail="auto"),
                       description=f"srx lite with a detail set: {Path(faithful).name} (faithful) and "
                                   f"{Path(sharp).name} (sharp), blended per image (--detail)")
    output.mkdir(parents=True, exist_ok=True)
    return write_model_dir(output, combined.to_dict(), ckpt)
