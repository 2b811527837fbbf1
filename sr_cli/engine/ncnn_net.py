"""An ncnn model (Tencent's ncnn format: ``NAME.param``, the layer graph as text, and ``NAME.bin``, its weights,
side by side) as an engine network, run by the ``ncnn`` package (BSD-3-Clause).

ncnn runs on the CPU in fp32 here, its Vulkan path and its fp16/bf16 storage and arithmetic off: the same numbers
on every machine, those of the exported fp32 network. A tile batch ``(B, 3, h, w)`` in [0, 1] goes through the
network one image at a time as an RGB, [0, 1], CHW float image (how the Real-ESRGAN authors' ncnn exports take it:
realesrgan-ncnn-vulkan scales 8-bit RGB by 1/255 before the network) and comes back ``(B, 3, s*h, s*w)``, clamped
to [0, 1] per tile as spandrel's networks are (``engine/classic.py``). The scale ``s`` is measured: an 8x8 input
is run once and the sizes compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointFormatError, UsageError, WeightsMissingError

INSTALL_HINT = 'pip install "srx[ncnn]"'
# The first line of every text .param file (ncnn's "param and model file structure"); the binary
# ``.param.bin`` form that ncnn2mem writes is not read here.
PARAM_MAGIC = "7767517"
PROBE_SIZE = 8  # the side of the input the scale is measured with


def import_ncnn():
    """The ``ncnn`` module, or a one-line error naming the extra that installs it."""
    try:
        import ncnn
    except ImportError:
        raise UsageError(f"ncnn models need the ncnn package ({INSTALL_HINT})") from None
    return ncnn


def weights_file(param: Path) -> Path:
    """The ``.bin`` beside a ``.param`` (``x.param`` -> ``x.bin``), as every ncnn export ships them."""
    return Path(param).with_suffix(".bin")


def check_model_files(param: Path) -> Path:
    """Refuse, in one line, a missing ``.param``, a missing ``.bin`` beside it, or a ``.param`` that is no ncnn
    text param file (checked before ncnn reads it: ncnn prints its own complaints on stderr); returns the ``.bin``."""
    param = Path(param)
    if not param.is_file():
        raise WeightsMissingError(f"{param}: model file not found")
    weights = weights_file(param)
    if not weights.is_file():
        raise WeightsMissingError(f"{param}: its weights {weights.name} are not beside it (an ncnn model is a "
                                  f".param and a .bin of the same name)")
    with open(param, "rb") as f:
        first = f.readline(64).strip()
    if first != PARAM_MAGIC.encode():
        raise CheckpointFormatError(f"{param}: not an ncnn model (an ncnn .param text file starts with "
                                    f"{PARAM_MAGIC})")
    return weights


class NcnnRunner(nn.Module):
    """The ncnn network itself (the module the bench times as ``network``): ``forward(x)`` on a CPU float batch
    ``(B, C, h, w)`` returns the network's output for each image, stacked, unclamped."""

    def __init__(self, param: Path, threads: int | None = None):
        super().__init__()
        ncnn = import_ncnn()
        self.param = Path(param)
        weights = check_model_files(self.param)
        self._ncnn = ncnn
        net = ncnn.Net()
        opt = net.opt  # options before loading: ncnn picks its layer implementations from them
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = False
        opt.use_bf16_storage = False
        if hasattr(opt, "use_bf16_packed"):  # ncnn 2025+
            opt.use_bf16_packed = False
        opt.num_threads = threads or torch.get_num_threads()
        if net.load_param(str(self.param)) != 0:
            raise CheckpointFormatError(f"{self.param}: ncnn cannot read this model (a damaged file, or a layer "
                                        f"this ncnn version does not have)")
        if net.load_model(str(weights)) != 0:
            raise CheckpointFormatError(f"{weights}: does not hold the weights {self.param.name} needs (damaged, "
                                        f"or another model's)")
        inputs, outputs = list(net.input_names()), list(net.output_names())
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointFormatError(f"{self.param}: an ncnn model with inputs {inputs} and outputs {outputs}; "
                                        f"srx runs image-to-image models with one input and one output")
        self.net = net
        self.input_name, self.output_name = inputs[0], outputs[0]

    def run_one(self, image: np.ndarray) -> np.ndarray:
        """One ``(C, h, w)`` float32 image through the network."""
        pixels = np.ascontiguousarray(image, dtype=np.float32)
        extractor = self.net.create_extractor()
        # ncnn.Mat wraps ``pixels`` without copying: the array must stay alive until ``extract`` returns.
        mat = self._ncnn.Mat(pixels)
        extractor.input(self.input_name, mat)
        ret, out = extractor.extract(self.output_name)
        if ret != 0:
            raise RuntimeError(f"{self.param}: ncnn failed on a {pixels.shape[2]}x{pixels.shape[1]} input "
                               f"(code {ret})")
        result = np.array(out, dtype=np.float32)  # a copy: ``out`` belongs to the extractor
        del mat, pixels
        return result

    @torch.compiler.disable  # ncnn runs outside torch: ``--compile`` leaves it as it is
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().float().cpu().numpy()
        return torch.stack([torch.from_numpy(self.run_one(image)) for image in images])


class NcnnNet(nn.Module):
    """An ncnn model as an engine network: ``forward(x)`` on a ``(B, 3, h, w)`` LR batch in [0, 1] (any device)
    returns ``(B, 3, scale*h, scale*w)`` float32 in [0, 1] on the CPU.

    ``scale``: the model's factor when known (a cached conversion recorded it), else measured here."""

    def __init__(self, param: Path, scale: int | None = None, threads: int | None = None):
        super().__init__()
        self.unet = NcnnRunner(param, threads)  # named as every engine names its main network
        self.scale = int(scale) if scale else measure_scale(self.unet)
        self.dtype = torch.float32

    @property
    def blobs(self) -> dict[str, Any]:
        return {"input": self.unet.input_name, "output": self.unet.output_name}

    def place(self, device: torch.device, dtype: torch.dtype) -> NcnnNet:
        """Nothing moves: ncnn runs on the CPU in fp32 whatever the device and dtype asked for (the pipeline's
        results are on the CPU anyway)."""
        self.compute_device, self.dtype = torch.device("cpu"), torch.float32
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.unet(x)
        h, w = x.shape[-2:]
        if out.shape[1] != 3 or out.shape[-2:] != (h * self.scale, w * self.scale):
            raise CheckpointFormatError(f"{self.unet.param}: gave {tuple(out.shape[1:])} for a {tuple(x.shape[1:])} "
                                        f"input, not 3 x{self.scale} channels")
        return out.clamp_(0, 1)


def measure_scale(runner: NcnnRunner) -> int:
    """The model's integer scale: an 8x8 RGB input through it, the output's size compared."""
    probe = torch.full((1, 3, PROBE_SIZE, PROBE_SIZE), 0.5)
    try:
        out = runner(probe)
    except RuntimeError:
        raise CheckpointFormatError(f"{runner.param}: ncnn cannot run this model on an RGB image") from None
    c, h, w = out.shape[1:]
    if c != 3 or h != w or h % PROBE_SIZE or h < PROBE_SIZE:
        raise CheckpointFormatError(f"{runner.param}: gave a {c}x{h}x{w} output for a 3x{PROBE_SIZE}x{PROBE_SIZE} "
                                    f"input: not an RGB super-resolution model with an integer scale")
    return h // PROBE_SIZE
