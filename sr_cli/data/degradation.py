"""Real-ESRGAN's second-order degradation, written in torch: clean crops in, realistic low-quality inputs out.

Real-world SR models (Real-ESRGAN, OSEDiff, Hero-SR, ...) are trained on pairs synthesised from clean
images: a classic degradation (blur -> resize -> noise -> JPEG) applied *twice*, then a resize to the target
size together with a sinc filter (ringing and overshoot) and a last JPEG, in random order. Two rounds cover
images that were already degraded before being degraded again (photos of photos, re-uploads).

Defaults are Real-ESRGAN's x4 recipe as OSEDiff ships it (``dataloaders/params_realesrgan.yml``); what that
file leaves to code (kernel sizes 7..21, sinc cut-offs, rotation range, the 50/50 order of the last steps,
the resize modes) follows Real-ESRGAN's code and paper (Wang et al., "Real-ESRGAN", ICCV-W 2021).

JPEG, like the reference, is the JPEG math in float (``jpeg="reference"``, see ``sr_cli.data.jpeg``): real
qualities, unrounded tables, no 8-bit rounding per round. ``jpeg="libjpeg"`` runs real libjpeg instead
(integer qualities, 8-bit images in and out), which adds ~0.3 levels of rounding noise to every sample and
changes the chroma (fancy upsampling, rounded tables): measurably off the reference's noise and colour
statistics (``benchmarks/degradation_stats.py``).

Deliberate differences from the reference code:

* Every random draw comes from the caller's ``torch.Generator``: the same (hq, seed) gives the same LQ.
* Kernels, resize modes, noise type / level / gray, JPEG qualities, the second blur, the final order and the
  final sinc are drawn per sample. The two intermediate resize *scales* are drawn once per batch (as
  Real-ESRGAN's batched training does), because a batch tensor has one spatial size.
* Reflect padding is undefined when a kernel's half-width reaches the image size (tiny intermediate images);
  there the filter falls back to replicate padding instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..errors import UsageError
from .draws import bernoulli, uniform_choice
from .jpeg import JPEG_MODES, apply_jpeg, sample_jpeg
from .kernels import (
    FINAL_SINC_CUTOFF,
    KERNEL_PROB,
    KERNEL_SIZES,
    KERNEL_TYPES,
    ROTATION_RANGE,
    SINC_CUTOFF_LARGE,
    SINC_CUTOFF_SMALL,
    apply_kernels,
    pulse_kernel,
    random_blur_kernel,
    random_sinc_kernel,
    stack_kernels,
)
from .noise import apply_noise, sample_noise
from .resize import (
    RESIZE_MODES,
    bicubic_downsample,
    resize_per_sample,
    sample_resize,
    scaled_size,
)


@dataclass
class DegradationConfig:
    """Probabilities and ranges of the degradation; field defaults are Real-ESRGAN's x4 recipe."""

    scale: int = 4  # total downsampling factor: the output is (H // scale, W // scale)
    # --- first degradation ---
    kernel_list: tuple[str, ...] = KERNEL_TYPES  # blur kernel families to draw from
    kernel_prob: tuple[float, ...] = KERNEL_PROB  # probability of each family in kernel_list
    sinc_prob: float = 0.1  # probability that the blur kernel is a sinc (ringing) filter instead
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # Gaussian-family std range along each axis, in pixels
    betag_range: tuple[float, float] = (0.5, 4.0)  # shape exponent range of the generalized Gaussian kernels
    betap_range: tuple[float, float] = (1.0, 2.0)  # shape exponent range of the plateau kernels
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # probability of resizing up, down, keeping size
    resize_range: tuple[float, float] = (0.15, 1.5)  # scale range: down draws in [lo, 1], up in [1, hi]
    gaussian_noise_prob: float = 0.5  # probability of Gaussian noise (else Poisson noise)
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian noise std range, in 8-bit levels (of 255)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)  # multiplier range of the Poisson (shot) noise
    gray_noise_prob: float = 0.4  # probability that the noise is the same on all three channels
    jpeg_range: tuple[int, int] = (30, 95)  # JPEG quality range, both ends included
    # --- second degradation ---
    second_blur_prob: float = 0.8  # probability of blurring again in the second degradation
    kernel_list2: tuple[str, ...] = KERNEL_TYPES  # second blur: kernel families
    kernel_prob2: tuple[float, ...] = KERNEL_PROB  # second blur: probability of each family
    sinc_prob2: float = 0.1  # second blur: probability of a sinc kernel
    blur_sigma2: tuple[float, float] = (0.2, 1.5)  # second blur: std range, in pixels
    betag_range2: tuple[float, float] = (0.5, 4.0)  # second blur: generalized Gaussian exponent range
    betap_range2: tuple[float, float] = (1.0, 2.0)  # second blur: plateau exponent range
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)  # second resize: probability of up, down, keep
    resize_range2: tuple[float, float] = (0.3, 1.2)  # second resize: scale range, relative to the output size
    gaussian_noise_prob2: float = 0.5  # second noise: probability of Gaussian (else Poisson)
    noise_range2: tuple[float, float] = (1.0, 25.0)  # second noise: Gaussian std range, in 8-bit levels
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)  # second noise: Poisson multiplier range
    gray_noise_prob2: float = 0.4  # second noise: probability of gray (channel-shared) noise
    jpeg_range2: tuple[int, int] = (30, 95)  # final JPEG quality range, both ends included
    # --- final step ---
    final_sinc_prob: float = 0.8  # probability of the sinc filter after resizing back (else no filter)
    resize_sinc_first_prob: float = 0.5  # probability of [resize back + sinc] then JPEG (else JPEG first)
    # --- values the yml leaves to Real-ESRGAN's code ---
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES  # odd kernel sizes drawn uniformly (blur and final sinc)
    rotation_range: tuple[float, float] = ROTATION_RANGE  # rotation range of anisotropic kernels, radians
    sinc_cutoff_small: tuple[float, float] = SINC_CUTOFF_SMALL  # blur sinc cut-off range for kernels < 13
    sinc_cutoff_large: tuple[float, float] = SINC_CUTOFF_LARGE  # blur sinc cut-off range for kernels >= 13
    final_sinc_cutoff: tuple[float, float] = FINAL_SINC_CUTOFF  # cut-off range of the final sinc filter
    resize_modes: tuple[str, ...] = RESIZE_MODES  # interpolation modes drawn uniformly for every resize
    jpeg: str = "reference"  # "reference": float JPEG math, real qualities (BasicSR's); "libjpeg": real 8-bit JPEG
    # --- mixing in clean inputs ---
    bicubic_prob: float = 0.0  # probability that a sample gets plain antialiased bicubic x1/scale instead

    def __post_init__(self) -> None:
        # YAML recipes give lists: store tuples so configs compare and hash like the defaults.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        """Fail early, with the field's name, on values the pipeline cannot honour."""
        if not isinstance(self.scale, int) or self.scale < 1:
            raise UsageError(f"degradation scale must be a positive integer, got {self.scale!r}")
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob", "second_blur_prob", "sinc_prob2",
                     "gaussian_noise_prob2", "gray_noise_prob2", "final_sinc_prob", "resize_sinc_first_prob",
                     "bicubic_prob"):
            _check_probability(name, getattr(self, name))
        for suffix in ("", "2"):
            kernels, probs = getattr(self, "kernel_list" + suffix), getattr(self, "kernel_prob" + suffix)
            unknown = [k for k in kernels if k not in KERNEL_TYPES]
            if unknown:
                raise UsageError(f"degradation kernel_list{suffix}: unknown kernel types {unknown}")
            _check_weights("kernel_prob" + suffix, probs, len(kernels))
            _check_weights("resize_prob" + suffix, getattr(self, "resize_prob" + suffix), 3)
            lo, hi = _check_range("resize_range" + suffix, getattr(self, "resize_range" + suffix))
            if not 0 < lo <= 1 <= hi:
                raise UsageError(f"degradation resize_range{suffix} must satisfy 0 < lo <= 1 <= hi, got {(lo, hi)}")
            for name in ("blur_sigma", "betag_range", "betap_range", "noise_range", "poisson_scale_range"):
                _check_range(name + suffix, getattr(self, name + suffix), positive=True)
            lo, hi = _check_range("jpeg_range" + suffix, getattr(self, "jpeg_range" + suffix))
            if not (1 <= lo and hi <= 100 and int(lo) == lo and int(hi) == hi):
                raise UsageError(f"degradation jpeg_range{suffix} must be integers in 1..100, got {(lo, hi)}")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise UsageError(f"degradation kernel_sizes must be odd positive sizes, got {self.kernel_sizes}")
        for name in ("rotation_range", "sinc_cutoff_small", "sinc_cutoff_large", "final_sinc_cutoff"):
            _check_range(name, getattr(self, name))
        if not self.resize_modes or any(m not in RESIZE_MODES for m in self.resize_modes):
            raise UsageError(f"degradation resize_modes must be among {RESIZE_MODES}, got {self.resize_modes}")
        if self.jpeg not in JPEG_MODES:
            raise UsageError(f"degradation jpeg must be one of {JPEG_MODES}, got {self.jpeg!r}")


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"degradation {name} must be a probability in [0, 1], got {p!r}")


def _check_weights(name: str, weights: Sequence[float], n: int) -> None:
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"degradation {name} must be {n} non-negative weights with a positive sum, got {weights}")


def _check_range(name: str, rng: Sequence[float], positive: bool = False) -> tuple[float, float]:
    if len(rng) != 2 or rng[0] > rng[1] or (positive and rng[0] <= 0):
        kind = "positive " if positive else ""
        raise UsageError(f"degradation {name} must be a {kind}(lo, hi) pair with lo <= hi, got {rng}")
    return rng[0], rng[1]


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp and round to 8-bit levels, like a saved low-quality image (Real-ESRGAN's last step)."""
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.0


def _subset(params: dict[str, Any], idx: list[int]) -> dict[str, Any]:
    """The per-sample parameters of the samples ``idx`` (lists and batch-first tensors)."""
    return {k: v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in idx] for k, v in params.items()}


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation of a batch; ``last_params`` records the latest call's draws.

    ``last_params`` maps names to per-sample lists (or batch-first tensors for the kernel weights), e.g.
    ``bicubic``, ``kernel1`` (dicts from ``random_blur_kernel``), ``resize1_scale``, ``noise1_type``,
    ``noise1_level``, ``jpeg1_quality``, ``blur2``, ``final_order``, ``final_sinc``, ``jpeg2_quality``.
    The resize scales are shared by the batch and repeated per sample.
    """

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig()
        self.last_params: dict[str, Any] = {}

    @torch.no_grad()
    def __call__(self, hq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """hq: (B, 3, H, W) float in [0, 1] on any device (H, W multiples of scale).

        Returns the low-quality batch (B, 3, H // scale, W // scale) in [0, 1], on hq's device, float32.
        Deterministic: the same hq and a generator seeded the same give exactly the same output.
        """
        x = self._checked(hq)
        b, _, h, w = x.shape
        s = self.config.scale
        params = self.sample_params(b, generator)
        self.last_params = params
        out = x.new_empty(b, 3, h // s, w // s)
        bicubic = [i for i in range(b) if params["bicubic"][i]]
        degraded = [i for i in range(b) if not params["bicubic"][i]]
        if bicubic:
            out[bicubic] = bicubic_downsample(x[bicubic], s)
        if degraded:
            out[degraded] = self.degrade(x[degraded], _subset(params, degraded), generator)
        return out

    def _checked(self, hq: torch.Tensor) -> torch.Tensor:
        s = self.config.scale
        if hq.dim() != 4 or hq.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got {tuple(hq.shape)}")
        if hq.shape[-2] % s or hq.shape[-1] % s:
            raise ValueError(f"H and W must be multiples of the scale {s}, got {tuple(hq.shape[-2:])}")
        if not hq.is_floating_point():
            raise ValueError(f"expected a float batch in [0, 1], got {hq.dtype}")
        return hq.float()

    def sample_params(self, batch: int, generator: torch.Generator) -> dict[str, Any]:
        """Draw every random choice of one call, per sample, before any image work."""
        c = self.config
        pad = max(c.kernel_sizes)
        blur = {"kernel_sizes": c.kernel_sizes, "rotation_range": c.rotation_range, "pad_to": pad,
                "sinc_cutoff_small": c.sinc_cutoff_small, "sinc_cutoff_large": c.sinc_cutoff_large}
        p: dict[str, Any] = {"bicubic": [bernoulli(generator, c.bicubic_prob) for _ in range(batch)]}

        k1 = [random_blur_kernel(generator, c.kernel_list, c.kernel_prob, c.blur_sigma, c.betag_range, c.betap_range,
                                 c.sinc_prob, **blur) for _ in range(batch)]
        p["kernel1"], p["kernel1_weights"] = [i for _, i in k1], stack_kernels([k for k, _ in k1], pad)
        p.update(self._sample_resize_noise_jpeg(generator, batch, stage=1))

        p["blur2"] = [bernoulli(generator, c.second_blur_prob) for _ in range(batch)]
        k2 = [random_blur_kernel(generator, c.kernel_list2, c.kernel_prob2, c.blur_sigma2, c.betag_range2,
                                 c.betap_range2, c.sinc_prob2, **blur) for _ in range(batch)]
        p["kernel2"] = [i for _, i in k2]
        p["kernel2_weights"] = stack_kernels([k if on else pulse_kernel(pad) for (k, _), on in zip(k2, p["blur2"])], pad)
        p.update(self._sample_resize_noise_jpeg(generator, batch, stage=2))

        p["final_order"] = ["resize_first" if bernoulli(generator, c.resize_sinc_first_prob) else "jpeg_first"
                            for _ in range(batch)]
        p["final_resize_mode"] = [uniform_choice(generator, c.resize_modes) for _ in range(batch)]
        p["final_sinc"] = [bernoulli(generator, c.final_sinc_prob) for _ in range(batch)]
        sincs = [random_sinc_kernel(generator, c.kernel_sizes, c.final_sinc_cutoff, pad) if on
                 else (pulse_kernel(pad), None) for on in p["final_sinc"]]
        p["sinc"], p["sinc_weights"] = [i for _, i in sincs], stack_kernels([k for k, _ in sincs], pad)
        return p

    def _sample_resize_noise_jpeg(self, generator: torch.Generator, batch: int, stage: int) -> dict[str, Any]:
        """The draws of one degradation round after its blur: resize, noise and JPEG (stage 1 or 2)."""
        c, sfx = self.config, "" if stage == 1 else "2"
        resize = sample_resize(generator, batch, getattr(c, "resize_prob" + sfx), getattr(c, "resize_range" + sfx),
                               c.resize_modes)
        noise = sample_noise(generator, batch, getattr(c, "gaussian_noise_prob" + sfx), getattr(c, "noise_range" + sfx),
                             getattr(c, "poisson_scale_range" + sfx), getattr(c, "gray_noise_prob" + sfx))
        quality = sample_jpeg(generator, batch, getattr(c, "jpeg_range" + sfx), integer=c.jpeg == "libjpeg")
        return {
            f"resize{stage}_direction": [resize["direction"]] * batch,
            f"resize{stage}_scale": [resize["scale"]] * batch,
            f"resize{stage}_mode": resize["modes"],
            f"noise{stage}_type": noise["type"],
            f"noise{stage}_level": noise["level"],
            f"noise{stage}_gray": noise["gray"],
            f"jpeg{stage}_quality": quality,
        }

    def degrade(self, x: torch.Tensor, p: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Apply drawn parameters ``p`` (per-sample, as from ``sample_params``) to x (B, 3, H, W)."""
        h, w = x.shape[-2:]
        out_size = (h // self.config.scale, w // self.config.scale)
        # First round: blur, resize relative to the input, noise, JPEG.
        out = apply_kernels(x, p["kernel1_weights"])
        # A scale factor, not a size, as the reference resizes: bilinear/bicubic then sample at its exact ratio.
        out = resize_per_sample(out, scaled_size((h, w), p["resize1_scale"][0]), p["resize1_mode"],
                                scale_factor=p["resize1_scale"][0])
        out = apply_noise(out, p["noise1_type"], p["noise1_level"], p["noise1_gray"], generator)
        out = apply_jpeg(out, p["jpeg1_quality"], self.config.jpeg)
        # Second round: blur (pulse kernels where skipped), resize relative to the output, noise.
        out = apply_kernels(out, p["kernel2_weights"])
        out = resize_per_sample(out, scaled_size(out_size, p["resize2_scale"][0]), p["resize2_mode"])
        out = apply_noise(out, p["noise2_type"], p["noise2_level"], p["noise2_gray"], generator)
        return quantize_8bit(self._final_steps(out, p, out_size, self.config.jpeg))

    @staticmethod
    def _final_steps(x: torch.Tensor, p: dict[str, Any], size: tuple[int, int], jpeg: str) -> torch.Tensor:
        """[resize back + sinc] and the last JPEG, in each sample's drawn order.

        Real-ESRGAN keeps resize and sinc together: other interleavings produce twisted lines.
        """
        out = x.new_empty(x.shape[0], x.shape[1], *size)

        def resize_and_sinc(y: torch.Tensor, idx: list[int]) -> torch.Tensor:
            y = resize_per_sample(y, size, [p["final_resize_mode"][i] for i in idx])
            return apply_kernels(y, p["sinc_weights"][idx])

        for order in ("resize_first", "jpeg_first"):
            idx = [i for i, o in enumerate(p["final_order"]) if o == order]
            if not idx:
                continue
            quality = [p["jpeg2_quality"][i] for i in idx]
            if order == "resize_first":
                out[idx] = apply_jpeg(resize_and_sinc(x[idx], idx), quality, jpeg)
            else:
                out[idx] = resize_and_sinc(apply_jpeg(x[idx], quality, jpeg), idx)
        return out
