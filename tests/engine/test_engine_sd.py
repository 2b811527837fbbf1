"""The SD one-step engine on tiny models in the published checkpoint formats, loaded offline
through the Hugging Face cache layout."""

import pytest
import torch
from helpers.reference import (authors_style_hero, authors_style_osediff, clip_embedding, one_step_ddpm,
                       one_step_formula)
from helpers.tiny import TINY_REPO

from sr_cli import load_model
from sr_cli.engine.pipeline import UpscaleOptions
from sr_cli.nets.dtsm import DynamicTimestepModule

EXACT = UpscaleOptions(tile=0, color_fix="none")  # native x4, whole image, no color fix


@pytest.fixture()
def lr():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, 8, 10, generator=g)


def upsampled(lr):
    """The model's input in [-1, 1]: PIL-bicubic x4 (checked against PIL itself in test_resize.py)."""
    from sr_cli.engine.resize import pil_resize

    return pil_resize(lr, lr.shape[-2] * 4, lr.shape[-1] * 4) * 2 - 1


def test_osediff_loads_from_hf_cache_and_matches_formula(hf_home, tiny_sd, osediff_pkl, lr):
    from diffusers import DDPMScheduler

    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    ours = model.upscale_tensor(lr, EXACT)

    unet, vae = authors_style_osediff(tiny_sd, osediff_pkl)
    emb = clip_embedding(tiny_sd, ", ,")  # OSEDiff's f"{tags}, {prompt}," with both empty
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    x = upsampled(lr)
    ref_formula = (one_step_formula(unet, vae, sched.alphas_cumprod, x, 999, emb) + 1) / 2
    ref_ddpm = (one_step_ddpm(unet, vae, sched, x, 999, emb) + 1) / 2
    assert ours.shape == (1, 3, 32, 40)
    assert torch.allclose(ours, ref_formula, atol=1e-4), (ours - ref_formula).abs().max()
    assert torch.allclose(ours, ref_ddpm, atol=1e-4), (ours - ref_ddpm).abs().max()


def test_osediff_lora_changes_output_and_merge_matches_unmerged(hf_home, tiny_sd, osediff_pkl, lr):
    from sr_cli.engine.pipeline import SRModel
    from sr_cli.engine.sd_onestep import OneStepSD
    from sr_cli.models.lora import has_adapters
    from sr_cli.models.registry import get_spec

    merged = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                        device="cpu", dtype="fp32")
    unmerged = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                          device="cpu", dtype="fp32",
                          merge_lora=False)
    assert not has_adapters(merged.net.unet) and not has_adapters(merged.net.vae)
    assert has_adapters(unmerged.net.unet) and has_adapters(unmerged.net.vae)
    # LoRA scale is lora_alpha / r = 8 / 4 = 2 (peft's default alpha, as the authors leave it).
    layer = unmerged.net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert layer.scaling["default_encoder"] == pytest.approx(2.0)
    a, b = merged.upscale_tensor(lr, EXACT), unmerged.upscale_tensor(lr, EXACT)
    assert (a - b).abs().max() <= 1e-4

    plain = SRModel(get_spec("osediff"), OneStepSD.from_pretrained(tiny_sd), torch.device("cpu"), torch.float32)
    assert (plain.upscale_tensor(lr, EXACT) - a).abs().max() > 1e-3  # the checkpoint matters


def test_osediff_full_conv_in_is_loaded(hf_home, tiny_sd, osediff_pkl):
    ckpt = torch.load(osediff_pkl, weights_only=True)
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32",
                       merge_lora=False)
    conv_in = model.net.unet.conv_in
    assert torch.equal(conv_in.base_layer.weight, ckpt["state_dict_unet"]["conv_in.base_layer.weight"])
    assert torch.equal(conv_in.lora_A["default_encoder"].weight, ckpt["state_dict_unet"]["conv_in.lora_A.default_encoder.weight"])


def test_hero_sr_dtsm_and_formula(hf_home, tiny_sd, hero_pkl, lr):
    from diffusers import DDPMScheduler

    model = load_model("hero-sr", base=TINY_REPO, weights=str(hero_pkl), device="cpu", dtype="fp32")
    ours = model.upscale_tensor(lr, EXACT)

    unet, vae, dtsm_state = authors_style_hero(tiny_sd, hero_pkl)
    dtsm = DynamicTimestepModule(channels=8, num_blocks=2, hidden=16)
    dtsm.load_state_dict(dtsm_state)
    dtsm.eval()
    x = upsampled(lr)
    # Deterministic: the argmax over the candidate list, input resized to 128x128 (nearest).
    with torch.no_grad():
        feats = torch.nn.functional.interpolate(x, size=(128, 128), mode="nearest")
        logits = dtsm.fc(torch.flatten(dtsm.avgpool(dtsm.conv2(dtsm.blocks(dtsm.conv1(feats)))), 1))
    t = int(dtsm.time_list[logits.argmax(1)].item())
    assert model.net.choose_timesteps(x, None).tolist() == [float(t)]
    assert model.net.choose_timesteps(x, None).tolist() == [float(t)]  # no Gumbel noise at inference

    # LoRA scale 8 / 16 = 0.5 for Hero-SR's rank 16.
    emb = clip_embedding(tiny_sd, " ")
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    ref = (one_step_formula(unet, vae, sched.alphas_cumprod, x, t, emb) + 1) / 2
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_hero_sr_adapter_names_and_scale(hf_home, hero_pkl):
    model = load_model("hero-sr", base=TINY_REPO, weights=str(hero_pkl), device="cpu", dtype="fp32", merge_lora=False)
    to_q = model.net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert set(to_q.lora_A.keys()) == {"default"}
    assert to_q.scaling["default"] == pytest.approx(0.5)
    assert "vae" in model.net.vae.encoder.conv_in.lora_A


def test_seed_samples_posterior_reproducibly(hf_home, osediff_pkl, lr):
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    mean = model.upscale_tensor(lr, EXACT)
    s1 = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none", seed=7))
    s2 = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none", seed=7))
    s3 = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none", seed=8))
    assert torch.equal(s1, s2)
    assert (s1 - s3).abs().max() > 0
    assert (s1 - mean).abs().max() > 0
    assert torch.equal(mean, model.upscale_tensor(lr, EXACT))


def test_prompt_changes_text_condition(hf_home, osediff_pkl, lr):
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    assert model.text_for("") == ", ,"
    assert model.text_for("a cat") == ", a cat,"
    a = model.upscale_tensor(lr, EXACT)
    b = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none", prompt="a cat"))
    assert (a - b).abs().max() > 0


def test_learned_text_embedding(hf_home, tiny_sd, osediff_pkl, tmp_path, lr):
    """DFOSD-style: a model directory with a learned embedding needs no text encoder."""
    from sr_cli.models.checkpoints import read_published, write_model_dir
    from sr_cli.models.registry import get_spec

    ckpt = read_published(osediff_pkl, "osediff-pkl")
    ckpt.tensors["text_embedding"] = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0))
    spec = get_spec("osediff").to_dict()
    spec.pop("name"), spec.pop("weights")
    spec["base"] = {"path": str(tiny_sd)}
    spec["defaults"]["text_condition"] = "learned"
    spec["format"] = "srx"
    model_dir = write_model_dir(tmp_path / "dfosd_like", spec, ckpt)
    model = load_model(str(model_dir), device="cpu", dtype="fp32")
    assert model.net.text_encoder is None
    out = model.upscale_tensor(lr, EXACT)
    ref = load_model("osediff", prompt_extractor="none", base=str(tiny_sd), weights=str(osediff_pkl),
                     device="cpu", dtype="fp32")
    assert (out - ref.upscale_tensor(lr, EXACT)).abs().max() > 1e-4


def test_model_directory_round_trip(hf_home, tiny_sd, hero_pkl, tmp_path, lr):
    """A converted checkpoint written as an srx model directory loads and gives the same output."""
    from sr_cli.models.checkpoints import read_published, write_model_dir
    from sr_cli.models.registry import get_spec

    spec = get_spec("hero-sr").to_dict()
    spec.pop("name"), spec.pop("weights")
    spec["base"] = {"path": str(tiny_sd)}
    spec["format"] = "srx"
    model_dir = write_model_dir(tmp_path / "m", spec, read_published(hero_pkl, "hero-sr-pkl"))
    assert sorted(p.name for p in model_dir.iterdir()) == ["srx_checksums.json", "srx_model.json", "weights.safetensors"]
    a = load_model(str(model_dir), device="cpu", dtype="fp32").upscale_tensor(lr, EXACT)
    b = load_model("hero-sr", base=str(tiny_sd), weights=str(hero_pkl), device="cpu", dtype="fp32").upscale_tensor(lr, EXACT)
    assert torch.equal(a, b)


def test_conversion_is_cached_as_safetensors(hf_home, osediff_pkl):
    from sr_cli.models import hub

    load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl), device="cpu", dtype="fp32")
    converted = hub.converted_dir(hub.sha256_file(osediff_pkl))
    assert (converted / "weights.safetensors").is_file() and (converted / "srx_model.json").is_file()
    from safetensors.torch import load_file

    tensors = load_file(str(converted / "weights.safetensors"))
    ckpt = torch.load(osediff_pkl, weights_only=True)
    assert set(tensors) == {f"unet.{k}" for k in ckpt["state_dict_unet"]} | {f"vae.{k}" for k in ckpt["state_dict_vae"]}
    k = next(iter(ckpt["state_dict_unet"]))
    assert torch.equal(tensors[f"unet.{k}"], ckpt["state_dict_unet"][k])


def test_scale_gives_exact_output_size(hf_home, osediff_pkl):
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    lr = torch.rand(1, 3, 9, 13)
    assert model.upscale_tensor(lr, UpscaleOptions(tile=0)).shape == (1, 3, 36, 52)
    assert model.upscale_tensor(lr, UpscaleOptions(scale=2.5, tile=0)).shape == (1, 3, 22, 32)
    # Other factors: the model runs at its native x4, then the result is resized (Lanczos).
    from PIL import Image

    from sr_cli.engine.resize import pil_resize

    native = model.upscale_tensor(lr, UpscaleOptions(tile=0))
    two = model.upscale_tensor(lr, UpscaleOptions(scale=2, tile=0))
    assert torch.allclose(two, pil_resize(native, 18, 26, Image.Resampling.LANCZOS), atol=1e-6)


def test_tiled_pipeline_close_to_whole(hf_home, osediff_pkl):
    """Tiles run the whole pipeline; with generous overlap the seams are small and the size exact."""
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    lr = torch.rand(1, 3, 20, 27, generator=torch.Generator().manual_seed(5))
    whole = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none"))
    calls = []
    tiled = model.upscale_tensor(lr, UpscaleOptions(tile=48, overlap=16, tile_batch=3, color_fix="none"),
                                 on_tile=lambda done, total: calls.append((done, total)))
    assert tiled.shape == whole.shape == (1, 3, 80, 108)
    assert calls[-1][0] == calls[-1][1] > 1
    assert torch.isfinite(tiled).all()


def test_hero_prompt_space_tokenizes_like_empty(hf_home, hero_pkl):
    model = load_model("hero-sr", base=TINY_REPO, weights=str(hero_pkl), device="cpu", dtype="fp32")
    assert model.text_for(model.spec.defaults.prompt) == " "
    assert torch.equal(model.net.encode_text(" "), model.net.encode_text(""))


def test_nan_output_is_an_error(hf_home, osediff_pkl, lr):
    from sr_cli.errors import NumericalError

    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl),
                       device="cpu", dtype="fp32")
    with torch.no_grad():
        model.net.vae.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN"):
        model.upscale_tensor(lr, EXACT)


def test_8bit_image_goes_through_the_authors_8bit_resize_end_to_end(hf_home, tiny_sd, osediff_pkl):
    """An 8-bit image (PIL, or uint8 as `srx upscale` passes it) is upsampled as the authors' script does it
    (PIL's 8-bit bicubic, then ToTensor), and the result comes out on the script's 8-bit levels (ToPILImage)."""
    import numpy as np
    from diffusers import DDPMScheduler
    from PIL import Image
    from torchvision import transforms

    from sr_cli.engine.pipeline import pil_to_uint8

    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))  # 4x: multiples of 8
    model = load_model("osediff", prompt_extractor="none", base=TINY_REPO, weights=str(osediff_pkl), device="cpu",
                       dtype="fp32")
    ours = model.upscale_tensor(pil_to_uint8(image), EXACT)
    via_pil = model.upscale(image, EXACT)

    unet, vae = authors_style_osediff(tiny_sd, osediff_pkl)
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    x = transforms.ToTensor()(image.resize((56, 40), Image.BICUBIC))[None] * 2 - 1  # the 8-bit-resized input
    y = (one_step_formula(unet, vae, sched.alphas_cumprod, x, 999, clip_embedding(tiny_sd, ", ,")) + 1) / 2
    expected = (y * 255).floor() / 255  # ToPILImage's levels
    assert ours.shape == (1, 3, 40, 56)
    diff = (ours - expected).abs() * 255
    assert diff.max() <= 1 + 1e-3 and (diff > 0.5).float().mean() < 0.01  # a level apart only at float ties
    assert np.array_equal(np.asarray(via_pil), (ours[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    # the float path (what a 16-bit image takes) would have fed a different input
    float_input = upsampled(pil_to_uint8(image).float() / 255)
    assert (float_input - x).abs().max() > 0.5 / 255
