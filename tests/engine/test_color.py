"""Color corrections against hand-computed values."""

import torch

from sr_cli.engine.color import adain_color_fix, apply_color_fix, wavelet_blur, wavelet_color_fix, wavelet_split


def test_adain_hand_computed():
    # One channel, four pixels. image: mean 2.5, unbiased var 5/3 (+1e-5); reference: mean 0.5, var 1/30 ... scaled.
    image = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2) / 10
    ref = torch.tensor([0.2, 0.2, 0.6, 0.6]).reshape(1, 1, 2, 2)
    m_i, v_i = 0.25, (0.15**2 + 0.05**2 + 0.05**2 + 0.15**2) / 3 + 1e-5
    m_r, v_r = 0.4, (4 * 0.2**2) / 3 + 1e-5
    expected = (image - m_i) / v_i**0.5 * v_r**0.5 + m_r
    out = adain_color_fix(image, ref)
    assert torch.allclose(out, expected.clamp(0, 1), atol=1e-6)
    assert torch.allclose(out.mean(), torch.tensor(m_r), atol=1e-6)


def test_adain_is_per_channel():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 8, 8, generator=g)
    # Reference channels with different means and small spreads, so nothing clips.
    ref = 0.05 * torch.rand(1, 3, 8, 8, generator=g) + torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    out = adain_color_fix(image, ref)
    assert torch.allclose(out.mean((2, 3)), ref.mean((2, 3)), atol=1e-5)
    var_i, var_r = image.var((2, 3)), ref.var((2, 3))
    expected_std = (var_r + 1e-5).sqrt() * var_i.sqrt() / (var_i + 1e-5).sqrt()  # the eps on both variances
    assert torch.allclose(out.std((2, 3)), expected_std, atol=1e-6)


def test_wavelet_blur_kernel_and_replicate_padding():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 16.0
    out = wavelet_blur(x, 1)
    expected = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32)
    assert torch.allclose(out[0, 0, 1:4, 1:4], expected)
    assert out.sum() == 16.0
    d2 = wavelet_blur(x, 2)  # dilation 2: taps two pixels apart
    assert d2[0, 0, 0, 0] == 1.0 and d2[0, 0, 2, 0] == 2.0 and d2[0, 0, 1, 1] == 0.0
    const = torch.full((1, 3, 6, 7), 0.3)
    assert torch.allclose(wavelet_blur(const, 4), const)  # replicate padding keeps constants


def test_wavelet_split_and_fix():
    x = torch.rand(1, 3, 40, 40)
    high, low = wavelet_split(x)
    assert torch.allclose(high + low, x, atol=1e-6)
    # Swapping the low band: a flat reference gives the image's details on the reference's color.
    flat = torch.full_like(x, 0.5)
    out = wavelet_color_fix(x, flat)
    assert torch.allclose(out, (high + 0.5).clamp(0, 1), atol=1e-6)
    assert torch.allclose(wavelet_color_fix(x, x), x, atol=1e-6)


def test_apply_color_fix_none_is_identity():
    x, r = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert torch.equal(apply_color_fix("none", x, r), x)
