"""``ModelFamily``: everything srx knows about one kind of network, in one object.

A family is one module in ``sr_cli/families/`` with one instance of a ``ModelFamily`` subclass; ``FAMILIES``
(``families/__init__.py``) maps each manifest ``family = "..."`` to it. Nothing outside this package branches on
a family's name: loading, upscaling, ``srx models``, the bench and training ask the family.

What a family provides (override what differs from the defaults here):

* ``name``, ``samplers`` (the ``sampler`` values it runs), ``formats`` (published single-file formats it reads,
  ``{format: converter(obj, path) -> ConvertedCheckpoint}``) and ``detect(obj)`` (which of them a loaded object is).
* ``model_file_spec(path)``: the spec of a bare weights file given as the model (``--model 4x_model.pth``), or
  None when the family does not run bare files (the default).
* ``source_files(spec, download)``: the verified published files of a registry model; ``conversion_key(files)``
  names their converted copy in the cache; ``convert(spec, files)`` turns them into srx's saved-model layout.
* ``check_import(spec, file)``: refuse a hand-downloaded file that is not in the model's format (``srx models
  import``); ``verify(spec, converted)``: read the published files, return what was checked (``srx models verify``).
* ``build(spec, ckpt, download=, merge_lora=)``: the network (an ``nn.Module`` with ``place(device, dtype)``).
* ``load_extras(spec, prompt_extractor, download)``: an auxiliary model loaded beside the network (OSEDiff's tagger).
* ``guidance_defaults``: the (pixel, semantic) guidance scales of a family with a pixel and a semantic LoRA
  (``--pixel-guidance``/``--semantic-guidance``); None (the default): other models refuse these options.
* ``plan(model, lr, opts, size, requested)``: how ``SRModel`` upscales one image: a ``TilePlan`` (what tiles are cut from,
  in which space and at which scale, the tile function, the color-fix reference).
* ``stages(net)``: the modules the bench times apart; ``flops_call(model, tile)``: one forward on one tile.
* ``describe_defaults(spec)``: ``(label, value)`` rows for ``srx models info``.

Heavy imports (torch, the engine) happen inside the methods: importing this package stays cheap (``srx --help``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, OptionError
from ..models.spec import SAMPLERS


@dataclass
class TilePlan:
    """How one image goes through the network.

    ``source`` (CPU) is cut into ``tile``-sized tiles with ``overlap`` (both in ``source`` pixels; ``tile`` 0: one
    piece); ``tile_fn`` maps a batch of crops to results ``scale`` times larger with ``out_channels`` channels (None:
    as many as the source), which are blended. The result is cropped to the native output size, checked, clamped to
    [0, 1] and color-fixed against ``color_reference()`` (called only when a color fix is asked for).
    ``authors_8bit_levels``: 8-bit inputs come out on the 8-bit levels of the authors' scripts (see
    ``pipeline.truncate_to_8bit``), before and after the color fix.
    ``color_fixed``: ``tile_fn`` already applied the requested color fix (HYPIR's authors fix the unclamped
    network output); the pipeline then only clamps and quantizes.
    """

    source: Any
    tile_fn: Callable[[Any], Any]
    tile: int
    overlap: int
    color_reference: Callable[[], Any]
    scale: int = 1
    out_channels: int | None = None
    authors_8bit_levels: bool = False
    color_fixed: bool = False


class ModelFamily:
    """The defaults every family shares; see the module docstring for the protocol."""

    name: str = ""
    samplers: tuple[str, ...] = ("one-step",)
    # Whether the network is conditioned on text (a prompt or a learned embedding): `srx models info` shows the
    # text condition only where it means something.
    text_conditioned: bool = False
    # True: ``plan`` takes any output size (the authors' code upsamples by any factor, HYPIR's); False: the
    # model runs at its native scale and other factors resize its result.
    any_scale: bool = False
    # Dual-LoRA families (PiSA-SR): the default (pixel, semantic) guidance scales; None: no such pair of LoRAs.
    guidance_defaults: tuple[float, float] | None = None
    formats: ClassVar[dict[str, Callable[[dict, Path], Any]]] = {}

    # ------------------------------------------------------------------ published formats
    def detect(self, obj: Any) -> str | None:
        """Which of this family's ``formats`` a loaded checkpoint object is (None: none of them)."""
        return None

    def model_file_spec(self, path: Path):
        """The ``ModelSpec`` of the weights file ``path`` given as the model (None: this family runs no bare files)."""
        return None

    def source_files(self, spec, download: bool) -> list[Path]:
        from ..models import hub

        path = hub.resolve_weights(spec, download=download)
        if path.suffix == ".safetensors" or spec.format == "srx":
            raise CheckpointFormatError(f"{path}: a bare safetensors file is not a model; pass its model directory")
        return [path]

    def conversion_key(self, files: list[Path]) -> str:
        """The converted copy's cache key: the sha256 of the published file(s)."""
        import hashlib

        from ..models import hub

        if len(files) == 1:
            return hub.sha256_file(files[0])
        return hashlib.sha256("".join(hub.sha256_file(f) for f in files).encode()).hexdigest()

    def convert(self, spec, files: list[Path]):
        """The published file(s) as a ``ConvertedCheckpoint`` (read with ``checkpoints.safe_torch_load``)."""
        from ..models.checkpoints import read_published

        return read_published(files[0], spec.format, spec.weights.filename)

    def check_import(self, spec, file: Path) -> None:
        from ..models.checkpoints import read_published

        read_published(file, spec.format, spec.weights.filename)

    def verify(self, spec, converted: Path | None) -> str:
        """Read the model's published file(s) (raising on a bad one); the line ``srx models verify`` prints."""
        from ..models import hub
        from ..models.checkpoints import read_published

        path = hub.resolve_weights(spec, download=False)
        read_published(path, spec.format, spec.weights.filename)
        return (f"{spec.name}: {path} OK (sha256 {hub.sha256_file(path)})"
                + (f"; converted copy {converted} OK" if converted else ""))

    # ------------------------------------------------------------------ the network
    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        raise NotImplementedError

    def load_extras(self, spec, prompt_extractor: str | None, download: bool):
        """An auxiliary model ``SRModel`` keeps beside the network (None: the family has none)."""

    # ------------------------------------------------------------------ upscaling
    def check_sampler(self, spec, sampler: str) -> None:
        if sampler not in self.samplers:
            raise OptionError("sampler", f"{sampler}: {spec.name} is a one-step model (only the ResShift family "
                                         f"has multi-step samplers)")

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        """``lr``: the input image (uint8 or float, ``(1, 3, h, w)``); ``opts``: the resolved options;
        ``size``: the native output size (the requested one with ``any_scale``); ``requested``: the options as the
        caller gave them (None fields)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ bench and descriptions
    def stages(self, net) -> dict[str, Any]:
        return {"unet": net.unet}

    def flops_call(self, model, tile: int) -> Callable[[], Any]:
        """A function running one forward pass on one ``tile``-sized input (the bench counts its FLOPs)."""
        raise NotImplementedError

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        return [("timestep", str(spec.defaults.timestep))]


def output_space_plan(model, reference, opts, run: Callable[[Any], Any], authors_8bit_levels: bool = False) -> TilePlan:
    """Tiles of the upsampled input ``reference`` (CPU, [0, 1], the native output size): the SD-style families.

    ``run`` maps a batch in [-1, 1] on the device to the network's output in [-1, 1]; ``reference`` is also the
    color-fix reference (the authors' color fix takes the same image).
    """
    import torch

    def tile_fn(crops: torch.Tensor) -> torch.Tensor:
        # Crops of the [0, 1] reference go to [-1, 1] per tile: no second image-sized copy of the input.
        # (``crops`` may be the reference itself when the image is one tile: never changed in place.)
        x = torch.mul(crops.to(model.device, non_blocking=True), 2).sub_(1)
        return run(x).add_(1).mul_(0.5).cpu()  # a new tensor: scaled in place

    return TilePlan(reference, tile_fn, opts.tile, opts.overlap, lambda: reference,
                    authors_8bit_levels=authors_8bit_levels)
