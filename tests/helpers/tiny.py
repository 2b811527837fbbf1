"""Tiny models of the real architectures, seeded, saved in the real published layouts.

- ``make_tiny_sd``: UNet2DConditionModel + AutoencoderKL + CLIP text encoder/tokenizer + DDPM scheduler
  at toy sizes, saved in the diffusers layout.
- ``place_in_hf_cache``: lays a directory out as a Hugging Face Hub cache entry
  (``models--org--name/refs/main`` + ``snapshots/<commit>/``) so the real hub code finds it offline.
- ``make_osediff_pkl`` / ``make_hero_sr_pkl``: checkpoints in exactly the authors' key layouts, with
  random non-zero LoRA weights, written with ``torch.save`` like theirs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY_REPO = "srx-test/tiny-sd"
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _bytes_to_unicode() -> list[str]:
    # GPT-2/CLIP byte-level alphabet (256 printable stand-ins for the bytes).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tokenizer():
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def make_tiny_sd(directory: Path, seed: int = 0) -> Path:
    """A toy SD base model (diffusers layout) with the real classes and config keys."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    )
    tok = make_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                       bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1)
    )
    # SD 2.1's schedule: scaled_linear betas 0.00085 .. 0.012 over 1000 steps.
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, steps_offset=1, prediction_type="epsilon")
    unet.save_pretrained(directory / "unet")
    vae.save_pretrained(directory / "vae")
    text_encoder.save_pretrained(directory / "text_encoder")
    tok.save_pretrained(directory / "tokenizer")
    sched.save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return directory


def place_in_hf_cache(src: Path, hub_cache: Path, repo: str = TINY_REPO, commit: str = TINY_COMMIT) -> Path:
    """Copy ``src`` into a Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>}."""
    root = Path(hub_cache) / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    shutil.copytree(src, snapshot, dirs_exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def _peft_state(model, adapters: dict[str, list[str]], rank: int, seed: int, extra=lambda k: False) -> dict:
    """Attach adapters like the authors do, randomize LoRA weights (non-zero B), return their saved subset."""
    from peft import LoraConfig

    for name, targets in adapters.items():
        model.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name=name)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if "lora" in k:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
        elif extra(k):
            state[k] = v + torch.randn(v.shape, generator=g) * 0.05
    return state


def make_osediff_pkl(base_dir: Path, path: Path, rank: int = 4, seed: int = 1) -> Path:
    """A tiny ``osediff.pkl`` in the published layout (lists of target names, ranks, peft-keyed state dicts)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sr_cli.models.lora import osediff_unet_targets, osediff_vae_targets

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    enc, dec, others = osediff_unet_targets(unet)
    vae_targets = osediff_vae_targets(vae)
    unet_state = _peft_state(unet, {"default_encoder": enc, "default_decoder": dec, "default_others": others}, rank,
                             seed, extra=lambda k: "conv_in" in k)
    vae_state = _peft_state(vae, {"default_encoder": vae_targets}, rank, seed + 1)
    # The authors' lists repeat names (one entry per matching pattern); keep that quirk.
    ckpt = {
        "vae_lora_encoder_modules": vae_targets + vae_targets[:3],
        "unet_lora_encoder_modules": enc,
        "unet_lora_decoder_modules": dec,
        "unet_lora_others_modules": others,
        "rank_unet": rank,
        "rank_vae": rank,
        "state_dict_unet": unet_state,
        "state_dict_vae": vae_state,
    }
    torch.save(ckpt, path)
    return path


HERO_UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                     "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]


def make_hero_sr_pkl(base_dir: Path, path: Path, rank: int = 16, seed: int = 2, timesteps=None) -> Path:
    """A tiny ``hero_sr_model.pkl``: UNet adapter ``default``, VAE adapter ``vae``, and a DTSM state dict."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sr_cli.models.lora import osediff_vae_targets
    from sr_cli.nets.dtsm import HERO_SR_TIMESTEPS, DynamicTimestepModule

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    vae_targets = osediff_vae_targets(vae)
    unet_state = _peft_state(unet, {"default": HERO_UNET_TARGETS}, rank, seed)
    vae_state = _peft_state(vae, {"vae": vae_targets}, rank, seed + 1)
    torch.manual_seed(seed)
    dtsm = DynamicTimestepModule(timesteps or HERO_SR_TIMESTEPS, channels=8, num_blocks=2, hidden=16)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in dtsm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = {
        "rank_unet": rank,
        "unet_lora_target_modules": HERO_UNET_TARGETS,
        "state_dict_unet": unet_state,
        "rank_vae": rank,
        "vae_lora_target_modules": vae_targets,
        "state_dict_vae": vae_state,
        "state_dict_time_adaptive": dtsm.state_dict(),
    }
    torch.save(ckpt, path)
    return path


def make_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A toy CLIP (text + vision towers) with the tiny tokenizer, saved like a Hub CLIP repo."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tok = make_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": len(tok) - 2,
                     "eos_token_id": len(tok) - 1, "pad_token_id": len(tok) - 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


def make_random_vgg16_cache(torch_home: Path) -> Path:
    """torchvision's VGG16 weight file, randomly initialized, where torchvision's cache looks for it
    ($TORCH_HOME/hub/checkpoints), so pyiqa's DISTS builds offline with the real architecture."""
    import torchvision

    path = Path(torch_home) / "hub" / "checkpoints" / "vgg16-397923af.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path


def make_hq_folder(directory: Path, n: int = 4, size: int = 80, seed: int = 0) -> Path:
    """Smooth random photographs-like images (low-frequency noise upsampled)."""
    import numpy as np
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(directory / f"hq{i}.png")
    return directory


# ----------------------------------------------------------------------------- ResShift family

TINY_SWIN_CONFIG = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                        attention_resolutions=(32, 16), swin_embed_dim=32, num_head_channels=16, window_size=4)
TINY_VQ_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                      up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[32, 32, 32], layers_per_block=1,
                      latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=32, scaling_factor=1.0)


def make_tiny_swin_unet(seed: int = 3):
    from sr_cli.nets.swin_unet import SwinUNet, SwinUNetConfig

    torch.manual_seed(seed)
    net = SwinUNet(SwinUNetConfig.from_dict(TINY_SWIN_CONFIG))
    with torch.no_grad():
        for p in net.parameters():  # random, non-zero everywhere (the bias tables start at 0)
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def make_tiny_vq(seed: int = 4):
    from sr_cli.nets.vqgan import build_vq_model

    torch.manual_seed(seed)
    vq = build_vq_model(TINY_VQ_CONFIG)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_(0, 0.5)
    return vq.eval()


def vq_state_to_ldm(state: dict, levels: int = 3) -> dict:
    """diffusers VQModel keys -> latent-diffusion (the authors') keys: the reverse of srx's conversion."""
    out = {}
    for k, v in state.items():
        n = k
        for part in ("encoder", "decoder"):
            n = n.replace(f"{part}.conv_norm_out", f"{part}.norm_out")
            n = n.replace(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1")
            n = n.replace(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2")
            n = n.replace(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1")
        n = n.replace("down_blocks.", "down.").replace(".resnets.", ".block.").replace(".downsamplers.0.", ".downsample.")
        if ".up_blocks." in n:
            i = int(n.split(".up_blocks.")[1].split(".")[0])
            n = n.replace(f".up_blocks.{i}.", f".up.{levels - 1 - i}.").replace(".upsamplers.0.", ".upsample.")
        n = n.replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in n:
            n = (n.replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")
                 .replace("to_out.0", "proj_out"))
            if v.dim() == 2:
                v = v[:, :, None, None]
        out[n] = v
    return out


def make_resshift_files(directory: Path, layout: str = "flat", unet=None, vq=None) -> tuple[Path, Path]:
    """A tiny denoiser ``.pth`` (authors' keys, buffers included) in ``layout`` (flat | state_dict | module)
    and a tiny VQ autoencoder ``.pth`` in the latent-diffusion layout."""
    from sr_cli.nets.swin_unet import official_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    unet = unet or make_tiny_swin_unet()
    vq = vq or make_tiny_vq()
    state = official_state_dict(unet, prefix="module." if layout == "module" else "")
    obj = {"state_dict": state} if layout == "state_dict" else state
    denoiser = directory / f"denoiser_{layout}.pth"
    torch.save(obj, denoiser)
    ae = directory / "autoencoder_vq_f4.pth"
    torch.save({"state_dict": vq_state_to_ldm(vq.state_dict())}, ae)
    return denoiser, ae
