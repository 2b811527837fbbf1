import math

import pytest
import torch
import torch.nn.functional as F

from sr_cli.data.degradation import DegradationConfig, RealESRGANDegradation
from sr_cli.data.jpeg import LUMA_TABLE, dct_matrix, float_jpeg, jpeg_compress, quant_tables
from sr_cli.data.kernels import (
    KERNEL_TYPES,
    apply_kernels,
    circular_lowpass_kernel,
    gaussian_kernel,
    pulse_kernel,
    random_blur_kernel,
    random_sinc_kernel,
)
from sr_cli.data.noise import add_gaussian_noise, add_poisson_noise, sample_noise
from sr_cli.data.resize import random_resize, resize_per_sample
from sr_cli.errors import UsageError

PI = math.pi


def bessel_j1(x: float, steps: int = 2_000) -> float:
    """J1 from Bessel's integral (1/pi) * int_0^pi cos(t - x sin t) dt (midpoint rule): independent of torch.special."""
    h = PI / steps
    return sum(math.cos(t - x * math.sin(t)) for t in ((i + 0.5) * h for i in range(steps))) * h / PI


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def photo(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Photo-like test batch: smooth coloured gradients plus fine texture, inside [0.1, 0.9]."""
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    base = 0.5 + 0.25 * torch.sin(6 * x + 4 * y + torch.arange(3.0).view(1, 3, 1, 1))
    texture = 0.15 * (torch.rand(b, 3, h, w, generator=gen(seed)) - 0.5)
    return (base + texture).clamp(0.1, 0.9)


def is_8bit(x: torch.Tensor) -> bool:
    return torch.allclose(x * 255, (x * 255).round(), atol=1e-4)


# ----------------------------------------------------------------------------------- config


def test_config_defaults_match_params_realesrgan_yml():
    c = DegradationConfig()
    assert c.scale == 4
    assert c.bicubic_prob == 0.0
    types = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
    probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    # first degradation
    assert c.kernel_list == types and c.kernel_prob == probs
    assert c.sinc_prob == 0.1
    assert c.blur_sigma == (0.2, 3) and c.betag_range == (0.5, 4) and c.betap_range == (1, 2)
    assert c.resize_prob == (0.2, 0.7, 0.1) and c.resize_range == (0.15, 1.5)
    assert c.gaussian_noise_prob == 0.5 and c.noise_range == (1, 30) and c.poisson_scale_range == (0.05, 3.0)
    assert c.gray_noise_prob == 0.4 and c.jpeg_range == (30, 95)
    # second degradation
    assert c.second_blur_prob == 0.8
    assert c.kernel_list2 == types and c.kernel_prob2 == probs
    assert c.sinc_prob2 == 0.1
    assert c.blur_sigma2 == (0.2, 1.5) and c.betag_range2 == (0.5, 4) and c.betap_range2 == (1, 2)
    assert c.resize_prob2 == (0.3, 0.4, 0.3) and c.resize_range2 == (0.3, 1.2)
    assert c.gaussian_noise_prob2 == 0.5 and c.noise_range2 == (1, 25) and c.poisson_scale_range2 == (0.05, 2.5)
    assert c.gray_noise_prob2 == 0.4 and c.jpeg_range2 == (30, 95)
    assert c.final_sinc_prob == 0.8
    # Real-ESRGAN's code: kernel sizes 7..21 (blur_kernel_size 21 is the padded size), cut-offs, order, modes
    assert c.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21) and max(c.kernel_sizes) == 21
    assert c.rotation_range == (-PI, PI)
    assert c.sinc_cutoff_small == (PI / 3, PI) and c.sinc_cutoff_large == (PI / 5, PI)
    assert c.final_sinc_cutoff == (PI / 3, PI)
    assert c.resize_sinc_first_prob == 0.5
    assert c.resize_modes == ("area", "bilinear", "bicubic")


def test_config_takes_yaml_lists_and_rejects_bad_values():
    c = DegradationConfig(blur_sigma=[0.5, 2.0], jpeg_range=[40, 60])
    assert c.blur_sigma == (0.5, 2.0) and c.jpeg_range == (40, 60)
    with pytest.raises(UsageError, match="sinc_prob"):
        DegradationConfig(sinc_prob=1.5)
    with pytest.raises(UsageError, match="kernel_prob"):
        DegradationConfig(kernel_prob=(0.5, 0.5))
    with pytest.raises(UsageError, match="jpeg_range2"):
        DegradationConfig(jpeg_range2=(30, 101))
    with pytest.raises(UsageError, match="resize_range"):
        DegradationConfig(resize_range=(1.2, 1.5))
    with pytest.raises(UsageError, match="kernel_sizes"):
        DegradationConfig(kernel_sizes=(7, 8))


# ----------------------------------------------------------------------------------- kernels


def test_random_blur_kernels_are_normalized_odd_sized_and_within_ranges():
    g = gen(1)
    seen = set()
    for _ in range(300):
        k, info = random_blur_kernel(g, pad_to=21)
        seen.add(info["type"])
        assert k.shape == (21, 21) and k.dtype == torch.float32
        assert abs(float(k.sum()) - 1) < 1e-5
        size = info["size"]
        assert size in (7, 9, 11, 13, 15, 17, 19, 21)
        border = (21 - size) // 2
        assert k[:border].abs().sum() == 0 and k[:, :border].abs().sum() == 0  # only the drawn size is filled
        assert torch.allclose(k, k.flip(0).flip(1), atol=1e-7)  # point-symmetric
        if info["type"] == "sinc":
            lo = PI / 3 if size < 13 else PI / 5
            assert lo <= info["cutoff"] <= PI
            continue
        assert 0.2 <= info["sigma_x"] <= 3 and 0.2 <= info["sigma_y"] <= 3
        assert -PI <= info["theta"] <= PI
        if "generalized" in info["type"]:
            assert 0.5 <= info["beta"] <= 4
        elif "plateau" in info["type"]:
            assert 1 <= info["beta"] <= 2
        else:
            assert info["beta"] is None
        if not info["type"].endswith("aniso"):
            assert info["sigma_x"] == info["sigma_y"] and info["theta"] == 0
    assert seen == set(KERNEL_TYPES) | {"sinc"}


def _direct_kernel(kind: str, size: int, sx: float, sy: float, theta: float, beta: float | None) -> torch.Tensor:
    """Textbook form: q = p^T Sigma^-1 p with Sigma = R diag(sx^2, sy^2) R^T, inverted numerically."""
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    sigma = rot @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(sigma)
    out = torch.empty(size, size, dtype=torch.float64)
    c = size // 2
    for row in range(size):
        for col in range(size):
            p = torch.tensor([col - c, row - c], dtype=torch.float64)
            q = p @ inv @ p
            if kind in ("iso", "aniso"):
                out[row, col] = torch.exp(-0.5 * q)
            elif kind.startswith("generalized"):
                out[row, col] = torch.exp(-0.5 * q**beta)
            else:
                out[row, col] = 1 / (1 + q**beta)
    return (out / out.sum()).float()


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_each_kernel_family_matches_its_formula(kind):
    prob = [1.0 if t == kind else 0.0 for t in KERNEL_TYPES]
    k, info = random_blur_kernel(gen(3), kernel_prob=prob, sinc_prob=0.0, kernel_sizes=(11,))
    assert info["type"] == kind and k.shape == (11, 11)
    expected = _direct_kernel(kind, 11, info["sigma_x"], info["sigma_y"], info["theta"], info["beta"])
    assert torch.allclose(k, expected, atol=1e-6)


def test_sinc_kernel_matches_bessel_formula():
    cutoff, size = 1.3, 13
    k = circular_lowpass_kernel(cutoff, size)
    assert abs(float(k.sum()) - 1) < 1e-5
    c = size // 2
    centre = cutoff**2 / (4 * PI)  # the r -> 0 limit of cutoff * J1(cutoff r) / (2 pi r)
    for dy, dx in [(0, 1), (1, 1), (2, 3), (0, 5), (6, 6)]:
        r = math.hypot(dx, dy)
        direct = cutoff * bessel_j1(cutoff * r) / (2 * PI * r)
        assert float(k[c + dy, c + dx] / k[c, c]) == pytest.approx(direct / centre, rel=1e-5, abs=1e-7)
    assert (k < 0).any()  # the side lobes that make ringing
    padded = circular_lowpass_kernel(cutoff, size, pad_to=21)
    assert padded.shape == (21, 21) and torch.equal(padded[4:17, 4:17], k)


def test_final_sinc_sampler_ranges():
    g = gen(5)
    for _ in range(100):
        k, info = random_sinc_kernel(g, pad_to=21)
        assert k.shape == (21, 21) and abs(float(k.sum()) - 1) < 1e-5
        assert info["size"] in range(7, 22, 2) and PI / 3 <= info["cutoff"] <= PI


# ----------------------------------------------------------------------------------- filtering


def test_apply_kernels_filters_each_sample_with_its_own_kernel():
    x = photo(b=3, h=24, w=24)
    box = pulse_kernel(21) * 0
    box[8:13, 8:13] = 1 / 25
    kernels = torch.stack([pulse_kernel(21), F.pad(gaussian_kernel(9, 2.0, 2.0), (6, 6, 6, 6)), box])
    out = apply_kernels(x, kernels)
    assert out.shape == x.shape
    assert torch.equal(out[0], x[0])  # the pulse is exactly the identity
    for i, kernel in ((1, gaussian_kernel(9, 2.0, 2.0)), (2, box[8:13, 8:13])):
        assert (out[i] - x[i]).abs().mean() > 0.01  # blurring changed the image ...
        assert out[i].std() < x[i].std()  # ... and smoothed it
        p = kernel.shape[-1] // 2
        ref = F.conv2d(F.pad(x[i : i + 1], (p,) * 4, mode="reflect"), kernel.expand(3, 1, -1, -1), groups=3)
        assert torch.allclose(out[i], ref[0], atol=1e-6)  # reflect-padded per-sample convolution


def test_apply_kernels_keeps_flat_images_flat_even_when_tiny():
    flat = torch.full((2, 3, 4, 4), 0.3)  # smaller than the 21x21 kernel's half-width: replicate padding
    kernels = torch.stack([circular_lowpass_kernel(PI / 3, 21), gaussian_kernel(21, 3.0, 1.0, 0.4)])
    assert torch.allclose(apply_kernels(flat, kernels), flat, atol=1e-6)


# ----------------------------------------------------------------------------------- resizing


def test_random_resize_sizes_and_scale_ranges():
    x = photo(b=2, h=40, w=32)
    g = gen(7)
    for direction, prob in (("up", (1, 0, 0)), ("down", (0, 1, 0)), ("keep", (0, 0, 1))):
        for _ in range(30):
            out, p = random_resize(x, g, prob, (0.15, 1.5))
            assert p["direction"] == direction
            lo, hi = {"up": (1, 1.5), "down": (0.15, 1), "keep": (1, 1)}[direction]
            assert lo <= p["scale"] <= hi
            assert out.shape == (2, 3, int(40 * p["scale"]), int(32 * p["scale"]))
            assert set(p["modes"]) <= {"area", "bilinear", "bicubic"}
    out, p = random_resize(x, g, (0, 0, 1), (0.15, 1.5), base_size=(10, 8))  # relative to another size
    assert p["scale"] == 1 and out.shape[-2:] == (10, 8)


def test_resize_uses_each_samples_mode():
    x = photo(b=3, h=16, w=16)
    modes = ["area", "bicubic", "bilinear"]
    out = resize_per_sample(x, (11, 7), modes)
    for i, mode in enumerate(modes):
        kwargs = {} if mode == "area" else {"align_corners": False}
        assert torch.allclose(out[i], F.interpolate(x[i : i + 1], size=(11, 7), mode=mode, **kwargs)[0])


def test_resize_with_a_scale_factor_samples_at_that_ratio_like_the_references_first_round():
    x = photo(b=3, h=20, w=20)
    modes = ["area", "bicubic", "bilinear"]
    out = resize_per_sample(x, (14, 14), modes, scale_factor=0.73)  # int(20 * 0.73) = 14, but 20 / 14 != 1 / 0.73
    for i, mode in enumerate(modes):
        kwargs = {} if mode == "area" else {"align_corners": False}
        expected = F.interpolate(x[i : i + 1], scale_factor=0.73, mode=mode, **kwargs)[0]
        assert torch.allclose(out[i], expected)
        if mode != "area":  # area averages over the output grid either way
            assert not torch.allclose(out[i], F.interpolate(x[i : i + 1], size=(14, 14), mode=mode, **kwargs)[0])


# ----------------------------------------------------------------------------------- noise


def test_gaussian_noise_has_the_requested_std_and_gray_noise_is_shared():
    x = torch.full((4, 3, 64, 64), 0.5)
    sigmas, gray = [5.0, 20.0, 5.0, 20.0], [False, False, True, True]
    out = add_gaussian_noise(x, sigmas, gray, gen(0))
    noise = out - x
    for i, s in enumerate(sigmas):
        assert noise[i].std().item() == pytest.approx(s / 255, rel=0.1)
        assert abs(noise[i].mean().item()) < 0.01
    assert torch.equal(noise[2, 0], noise[2, 1]) and torch.equal(noise[3, 1], noise[3, 2])  # gray: one map
    assert not torch.allclose(noise[0, 0], noise[0, 1])  # colour: independent channels
    assert torch.equal(out, add_gaussian_noise(x, sigmas, gray, gen(0)))
    assert not torch.equal(out, add_gaussian_noise(x, sigmas, gray, gen(1)))


def test_poisson_noise_grows_with_brightness_and_scale_and_gray_is_shared():
    x = photo(b=3, h=64, w=64)  # many 8-bit levels: intensities are read as counts out of 256
    x = torch.cat([0.05 + 0.1 * x[..., :32], 0.5 + 0.3 * x[..., 32:]], dim=-1)  # a dark and a bright half
    out = add_poisson_noise(x, [1.0, 0.2, 1.0], [False, False, True], gen(0))
    noise = out - x
    assert noise[0].abs().mean() > 0.01  # it changed the image
    assert noise[0, :, :, 32:].std() > 1.5 * noise[0, :, :, :32].std()  # shot noise: brighter is noisier
    assert noise[0].abs().mean() > 3 * noise[1].abs().mean()  # scale 1.0 vs 0.2
    assert abs(noise[0].mean().item()) < 0.01  # zero-mean
    unclamped = ((out[2] > 0) & (out[2] < 1)).all(0)  # clamping at 0 in the dark half cuts some noise
    assert unclamped.float().mean() > 0.8
    gray = noise[2][:, unclamped]
    assert torch.allclose(gray[0], gray[1], atol=1e-6) and torch.allclose(gray[0], gray[2], atol=1e-6)
    assert not torch.allclose(noise[0, 0], noise[0, 1], atol=1e-3)
    assert out.min() >= 0 and out.max() <= 1


def test_noise_sampler_ranges():
    p = sample_noise(gen(2), 500, 0.5, (1, 30), (0.05, 3.0), 0.4)
    gaussian = [lv for t, lv in zip(p["type"], p["level"]) if t == "gaussian"]
    poisson = [lv for t, lv in zip(p["type"], p["level"]) if t == "poisson"]
    assert 200 < len(gaussian) < 300 and all(1 <= v <= 30 for v in gaussian)
    assert all(0.05 <= v <= 3.0 for v in poisson)
    assert 150 < sum(p["gray"]) < 250


# ----------------------------------------------------------------------------------- JPEG


def test_jpeg_is_lossy_per_sample_and_lower_quality_is_worse():
    x = photo(b=1, h=48, w=48).expand(3, -1, -1, -1).contiguous().double()
    out = jpeg_compress(x, [10, 50, 95])
    assert out.shape == x.shape and out.dtype == torch.float64 and out.device == x.device
    assert is_8bit(out)
    err = [(out[i] - x[i]).abs().mean().item() for i in range(3)]
    assert err[2] > 1 / 255 / 4  # even q=95 changes the image
    assert err[0] > err[1] > err[2]
    assert torch.equal(out[1:2], jpeg_compress(x[1:2], 50))  # per-sample quality = separate calls


# ----------------------------------------------------------------------------------- pipeline


def test_output_shape_range_dtype_and_8bit_levels():
    hq = photo(b=4, h=64, w=48).double()
    degrade = RealESRGANDegradation()
    for seed in range(3):
        lq = degrade(hq, gen(seed))
        assert lq.shape == (4, 3, 16, 12) and lq.dtype == torch.float32 and lq.device == hq.device
        assert lq.min() >= 0 and lq.max() <= 1 and is_8bit(lq)
        clean = F.interpolate(hq.float(), size=(16, 12), mode="bicubic", antialias=True)
        assert (lq - clean).abs().mean() > 0.005  # degraded, not just downsampled


def test_same_seed_same_output_and_different_seed_differs():
    hq = photo(b=3, h=32, w=32)
    degrade = RealESRGANDegradation()
    a = degrade(hq, gen(11))
    params = degrade.last_params
    b = degrade(hq, gen(11))
    assert torch.equal(a, b)
    assert degrade.last_params["noise1_level"] == params["noise1_level"]
    assert not torch.equal(a, degrade(hq, gen(12)))


def test_rejects_bad_batches():
    degrade = RealESRGANDegradation()
    with pytest.raises(ValueError, match="multiples"):
        degrade(torch.rand(1, 3, 30, 32), gen())
    with pytest.raises(ValueError, match="3, H, W"):
        degrade(torch.rand(1, 1, 32, 32), gen())


def test_last_params_lie_within_the_configured_ranges():
    c = DegradationConfig()
    degrade = RealESRGANDegradation(c)
    hq = photo(b=64, h=32, w=32)
    directions = set()
    for seed in range(4):
        lq = degrade(hq, gen(seed))
        p = degrade.last_params
        assert lq.shape == (64, 3, 8, 8)
        assert all(len(v) == 64 for v in p.values())
        for stage, sigma_hi in (("1", 3.0), ("2", 1.5)):
            for info in p[f"kernel{stage}"]:
                assert info["size"] in c.kernel_sizes
                if info["type"] != "sinc":
                    assert 0.2 <= info["sigma_x"] <= sigma_hi and 0.2 <= info["sigma_y"] <= sigma_hi
            assert torch.allclose(p[f"kernel{stage}_weights"].sum((1, 2)), torch.ones(64), atol=1e-5)
            rng = c.resize_range if stage == "1" else c.resize_range2
            (direction,), (scale,) = set(p[f"resize{stage}_direction"]), set(p[f"resize{stage}_scale"])
            directions.add(direction)
            assert rng[0] <= scale <= rng[1]
            assert (scale >= 1) if direction == "up" else (scale <= 1) if direction == "down" else (scale == 1)
            noise_hi, poisson_hi = (30, 3.0) if stage == "1" else (25, 2.5)
            for kind, level in zip(p[f"noise{stage}_type"], p[f"noise{stage}_level"]):
                assert (1 <= level <= noise_hi) if kind == "gaussian" else (0.05 <= level <= poisson_hi)
            qualities = p[f"jpeg{stage}_quality"]
            assert all(30 <= q <= 95 for q in qualities)
            assert any(q != int(q) for q in qualities)  # real-valued qualities, as the reference draws them
            assert 0 < sum(p[f"noise{stage}_gray"]) < 64
        # kernel2 is the identity exactly where the second blur was skipped
        for on, kernel in zip(p["blur2"], p["kernel2_weights"]):
            assert on or torch.equal(kernel, pulse_kernel(21))
        assert 0 < sum(p["blur2"]) < 64
        for on, info in zip(p["final_sinc"], p["sinc"]):
            assert (PI / 3 <= info["cutoff"] <= PI) if on else info is None
        assert set(p["final_order"]) == {"resize_first", "jpeg_first"}
        assert set(p["final_resize_mode"]) == {"area", "bilinear", "bicubic"}
        assert not any(p["bicubic"])
    assert len(directions) >= 2


def test_bicubic_prob_one_is_exactly_antialiased_bicubic():
    hq = photo(b=3, h=32, w=48)
    lq = RealESRGANDegradation(DegradationConfig(bicubic_prob=1.0))(hq, gen())
    expected = F.interpolate(hq, size=(8, 12), mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.equal(lq, expected)


def test_bicubic_prob_mixes_clean_and_degraded_samples():
    hq = photo(b=16, h=32, w=32)
    degrade = RealESRGANDegradation(DegradationConfig(bicubic_prob=0.5))
    lq = degrade(hq, gen(4))
    clean = F.interpolate(hq, size=(8, 8), mode="bicubic", antialias=True).clamp(0, 1)
    flags = degrade.last_params["bicubic"]
    assert 0 < sum(flags) < 16
    for i, bicubic in enumerate(flags):
        assert torch.equal(lq[i], clean[i]) == bicubic


# ----------------------------------------------------------------------------------- float JPEG (the reference's)

ZIGZAG = sorted(((r, c) for r in range(8) for c in range(8)),
                key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]))


def libjpeg_written_tables(quality: int) -> dict[int, torch.Tensor]:
    """The quantization tables (DQT segments) libjpeg writes into a JPEG at ``quality``, as 8x8 [row, col]."""
    from torchvision.io import encode_jpeg

    data = bytes(encode_jpeg((photo(b=1, h=16, w=16)[0] * 255).to(torch.uint8), quality=quality).tolist())
    tables, i = {}, 2
    while data[i] == 0xFF and data[i + 1] != 0xDA:  # walk the header segments up to start-of-scan
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] == 0xDB:
            j = i + 4
            while j < i + 2 + length:
                assert data[j] >> 4 == 0  # 8-bit tables
                table = torch.zeros(8, 8, dtype=torch.float64)
                for k, (r, c) in enumerate(ZIGZAG):
                    table[r, c] = data[j + 1 + k]
                tables[data[j] & 0x0F] = table
                j += 65
        i += 2 + length
    return tables


@pytest.mark.parametrize("quality", [5, 30, 49, 50, 75, 95, 100])
def test_libjpeg_tables_follow_libjpegs_quality_formula(quality):
    written = libjpeg_written_tables(quality)
    luma, chroma = quant_tables(quality, libjpeg_tables=True)
    assert torch.equal(luma, written[0]) and torch.equal(chroma, written[1])


def test_reference_tables_are_the_unrounded_scaled_standard_tables():
    luma, chroma = quant_tables(30.5)
    assert torch.allclose(luma, torch.tensor(LUMA_TABLE, dtype=torch.float64) * 50 / 30.5)
    luma, chroma = quant_tables(97.5)  # below one: the reference never clamps the steps to integers >= 1
    assert luma[0, 2].item() == pytest.approx(10 * 0.05) and chroma[7, 7].item() == pytest.approx(99 * 0.05)
    with pytest.raises(ValueError, match="quality"):
        quant_tables(0)
    x = photo(b=1, h=16, w=16)
    top = float_jpeg(x, 100)  # finite (the reference divides by zero here), and the least lossy
    assert torch.isfinite(top).all() and (top - x).abs().mean() < (float_jpeg(x, 95) - x).abs().mean()


def test_dct_matrix_is_orthonormal_and_gives_jpegs_dc_scale():
    d = dct_matrix(torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    block = torch.full((8, 8), 10.0, dtype=torch.float64)
    assert (d @ block @ d.T)[0, 0].item() == pytest.approx(80.0)  # JPEG's DC = 8 x mean


def test_float_jpeg_round_trip_is_close_to_libjpegs_decode():
    # Gray photo-like image, 8-bit: with libjpeg's tables the float math differs from libjpeg's decode only by
    # rounding (its integer DCT and 8-bit output: ~0.33 levels mean measured, 0.25 for 8-bit rounding alone).
    # The reference's transposed luma table is measurably further off (0.5..2.4 levels).
    g = gen(5)
    tex = F.interpolate(torch.rand(1, 1, 16, 16, generator=g), size=(64, 64), mode="bicubic")
    ramp = torch.linspace(0, 1, 64)
    gray = (0.3 + 0.4 * ramp.view(64, 1) * ramp + 0.3 * (tex - 0.5)).clamp(0, 1)
    img = ((gray * 255).round() / 255).expand(1, 3, 64, 64).contiguous()
    for quality in (30, 75, 95):
        libjpeg = jpeg_compress(img, quality)
        ours = float_jpeg(img, quality, libjpeg_tables=True, transposed_luma_table=False)
        assert (ours - libjpeg).abs().mean() * 255 < 0.45
        if quality < 90:  # at q95 JPEG's own error is down to the rounding level
            assert (ours - libjpeg).abs().mean() < 0.5 * (libjpeg - img).abs().mean()
            assert (float_jpeg(img, quality, libjpeg_tables=True) - libjpeg).abs().mean() * 255 > 0.6


def test_float_jpeg_is_per_sample_lossy_float_and_keeps_whole_macroblocks_of_flat_images_flat():
    x = photo(b=1, h=48, w=48).expand(3, -1, -1, -1).contiguous()
    out = float_jpeg(x, [30.0, 60.5, 95.0])
    assert out.shape == x.shape and out.dtype == x.dtype and not is_8bit(out)
    err = [(out[i] - x[i]).abs().mean().item() for i in range(3)]
    assert err[0] > err[1] > err[2] > 0
    assert torch.allclose(out[1:2], float_jpeg(x[1:2], 60.5))
    flat = torch.full((1, 3, 32, 32), 0.5)
    out = float_jpeg(flat, 50)  # only the DC moves, by at most half its step (16 / 8 / 2 = 1 level at q50)
    assert out.std() < 1e-6 and (out - flat).abs().max() <= 1 / 255 + 1e-6
    # Sizes that are not multiples of 16 are zero-padded as in the reference: partial blocks get darker edges.
    edge = float_jpeg(torch.full((1, 3, 20, 20), 0.5), 50)
    assert edge[..., :8, :8].sub(0.5).abs().max() <= 1 / 255 + 1e-6 and edge[..., 16:, 16:].mean() < 0.5 - 1 / 255


def test_float_jpeg_soft_rounding_passes_gradients():
    x = photo(b=1, h=16, w=16).requires_grad_()
    float_jpeg(x, 90, differentiable=True).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().mean() > 0.05
    y = photo(b=1, h=16, w=16).requires_grad_()
    float_jpeg(y, 90).sum().backward()
    assert y.grad.abs().max() == 0  # hard rounding: flat almost everywhere


def test_jpeg_option_selects_libjpeg_with_integer_qualities_or_rejects_unknown_modes():
    degrade = RealESRGANDegradation(DegradationConfig(jpeg="libjpeg"))
    degrade(photo(b=8), gen(3))
    qualities = degrade.last_params["jpeg1_quality"] + degrade.last_params["jpeg2_quality"]
    assert all(isinstance(q, int) and 30 <= q <= 95 for q in qualities)
    with pytest.raises(UsageError, match="jpeg must be one of"):
        DegradationConfig(jpeg="pillow")


def test_the_separable_gaussian_blur_is_the_square_kernel_filter():
    from sr_cli.data.kernels import apply_kernels, gaussian_blur, gaussian_kernel

    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(4))
    for sigma, size in [(0.8, 5), (2.0, 13), (8.0, 31)]:
        assert torch.allclose(gaussian_blur(x, sigma, size), apply_kernels(x, gaussian_kernel(size, sigma, sigma)),
                              atol=1e-6)
    assert torch.equal(gaussian_blur(x, 0.0, 5), x)
