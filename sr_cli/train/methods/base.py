"""``TrainMethod``: what every training method is — a name, its paper defaults, its options, its loss terms.

A method's own options (what only it uses: LoRA rank, prompt, teacher, ...) are its ``Options`` dataclass,
with the paper's values as defaults and checks in ``__post_init__``; ``TrainConfig.options`` holds one.
A subclass extends its parent's: ``@dataclass class Options(Parent.Options): ...``.

A method is an ``nn.Module`` whose ``forward(lq, hq)`` returns its loss terms and their weighted sum
(``total``), so that accelerate/DDP can wrap it. A method computes its terms unweighted in
``loss_terms``; the weights come from ``TrainConfig.loss_weights`` (the method's ``loss_weights`` are its
defaults, and name every term it has). A second network with its own loss and optimizer (OSEDiff's fake
score, a discriminator) is the submodule ``aux``: its parameters are not the generator's
(``trainable_parameters``), and ``aux(*aux_inputs)`` returns its own terms and ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ...errors import UsageError

if TYPE_CHECKING:  # the config imports the methods (to build their options)
    from ..config import TrainConfig

AUX = "aux"  # the auxiliary network's attribute (and its parameters' prefix)


@dataclass
class CLIPOptions:
    """Options of the methods with a CLIP loss."""

    clip_model: str = "openai/clip-vit-base-patch32"  # a Hub id or a directory (transformers CLIPModel)


def at_least_one(options: Any, *names: str) -> None:
    for name in names:
        if getattr(options, name) < 1:
            raise UsageError(f"{name} must be >= 1")


class TrainMethod(nn.Module):
    name: ClassVar[str]
    commands: ClassVar[tuple[str, ...]] = ("train",)  # the srx commands that run it: train, distill
    summary: ClassVar[str] = ""  # one line for --help and docs
    defaults: ClassVar[dict[str, Any]] = {}  # common TrainConfig fields as the paper trains
    loss_weights: ClassVar[dict[str, float]] = {}  # every loss term, with its default weight

    @dataclass
    class Options:
        """The method's own options (none here)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.options = cfg.options
        self.aux: nn.Module | None = None
        self.net: nn.Module  # the engine's network that inference runs (what is exported)

    # ------------------------------------------------------------------ what a method defines
    @classmethod
    def base_model(cls, cfg: TrainConfig) -> str | None:
        """The base diffusion model to fetch before building (None: the method needs none)."""
        return None

    @classmethod
    def training_data(cls, cfg: TrainConfig, echo=print, main_process: bool = True) -> list[str]:
        """The folders ``CropDataset`` reads (default: ``cfg.data``). A method that derives its data from
        them (teacher targets) makes it here, on the main process; the others get the finished folders."""
        return list(cfg.data)

    @classmethod
    def clean_data(cls, cfg: TrainConfig) -> list[str]:
        """Those of ``training_data``'s paired folders whose LR images are clean bicubic downsamplings of their
        HR images (their samples come with ``clean`` set): a method may spare them the terms that add
        detail, so that clean inputs stay faithful."""
        return []

    def loss_terms(self, lq: torch.Tensor, hq: torch.Tensor, clean: torch.Tensor | None = None
                   ) -> tuple[dict[str, torch.Tensor], tuple | None]:
        """(unweighted loss terms by name, the inputs of ``aux``'s own loss or None) for a batch in [0, 1];
        ``clean``: per sample, whether its LR is a clean bicubic downsampling (None: unknown, none is)."""
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

    def forward(self, lq: torch.Tensor, hq: torch.Tensor, clean: torch.Tensor | None = None) -> dict[str, Any]:
        terms, aux_inputs = self.loss_terms(lq, hq, clean)
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
