"""``TrainMethod``: what every training method is — a name, its paper defaults, its loss terms.

A method is an ``nn.Module`` whose ``forward(lq, hq)`` returns its loss terms and their weighted sum
(``total``), so that accelerate/DDP can wrap it. A method computes its terms unweighted in
``loss_terms``; the weights come from ``TrainConfig.loss_weights`` (the method's ``loss_weights`` are its
defaults, and name every term it has). A second network with its own loss and optimizer (OSEDiff's fake
score, a discriminator) is the submodule ``aux``: its parameters are not the generator's
(``trainable_parameters``), and ``aux(*aux_inputs)`` returns its own terms and ``total``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..config import TrainConfig

AUX = "aux"  # the auxiliary network's attribute (and its parameters' prefix)


class TrainMethod(nn.Module):
    name: ClassVar[str]
    command: ClassVar[str] = "train"  # the srx command that runs it: train | distill
    summary: ClassVar[str] = ""  # one line for --help and docs
    base: ClassVar[str | None] = None  # the default base diffusion model (None: the method needs none)
    defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig fields as the paper trains
    loss_weights: ClassVar[dict[str, float]] = {}  # every loss term, with its default weight

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.aux: nn.Module | None = None
        self.net: nn.Module  # the engine's network that inference runs (what is exported)

    # ------------------------------------------------------------------ what a method defines
    def loss_terms(self, lq: torch.Tensor, hq: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple | None]:
        """(unweighted loss terms by name, the inputs of ``aux``'s own loss or None) for a batch in [0, 1]."""
        raise NotImplementedError

    def model_spec(self):
        """The ``ModelSpec`` of the trained network: how inference runs it (family, format, defaults)."""
        raise NotImplementedError

    def checkpoint(self):
        """The trained weights as a ``ConvertedCheckpoint`` (srx's own format)."""
        raise NotImplementedError

    def export(self):
        """(spec as ``srx_model.json`` holds it, checkpoint): what ``checkpoints.write_model_dir`` writes."""
        return self.model_spec().to_dict(), self.checkpoint()

    # ------------------------------------------------------------------ shared behaviour
    def weight(self, term: str) -> float:
        return float(self.cfg.loss_weights.get(term, 0.0))

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, Any]:
        terms, aux_inputs = self.loss_terms(lq, hq)
        weights = self.cfg.loss_weights
        total = sum(weights[k] * v for k, v in terms.items() if k in weights)
        out: dict[str, Any] = dict(terms)  # every term is logged, weighted or not
        out["total"] = total
        if aux_inputs is not None:
            out["aux_inputs"] = aux_inputs
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The generator's trainable parameters (the auxiliary network has its own optimizer)."""
        return [p for _, p in self.generator_parameters()]

    def generator_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters()
                if p.requires_grad and not n.startswith(AUX + ".")]

    def aux_parameters(self) -> list[tuple[str, nn.Parameter]]:
        if self.aux is None:
            return []
        return [(n, p) for n, p in self.aux.named_parameters() if p.requires_grad]


def check_loss_weights(method: type[TrainMethod], weights: dict[str, Any]) -> dict[str, float]:
    """The method's default weights updated with ``weights``; an unknown term is a usage error."""
    from ...errors import UsageError

    unknown = sorted(set(weights) - set(method.loss_weights))
    if unknown:
        raise UsageError(f"--loss-weight {unknown[0]}: {method.name} has no such loss term "
                         f"(its terms: {', '.join(method.loss_weights)})")
    out = dict(method.loss_weights)
    for k, v in weights.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise UsageError(f"--loss-weight {k}={v!r}: not a number") from None
    return out
