"""Independent re-computations used as test oracles (written from the papers/authors' procedure,
not through srx's loader or engine)."""

from __future__ import annotations

import torch


def authors_style_osediff(base_dir, pkl_path):
    """Load a tiny OSEDiff the way the authors' test code does (peft adapters + named_parameters copy)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    ckpt = torch.load(pkl_path, weights_only=True)
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    for part in ("encoder", "decoder", "others"):
        unet.add_adapter(LoraConfig(r=ckpt["rank_unet"], init_lora_weights="gaussian",
                                    target_modules=ckpt[f"unet_lora_{part}_modules"]), adapter_name=f"default_{part}")
    for n, p in unet.named_parameters():
        if "lora" in n or "conv_in" in n:
            p.data.copy_(ckpt["state_dict_unet"][n])
    unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
    vae.add_adapter(LoraConfig(r=ckpt["rank_vae"], init_lora_weights="gaussian",
                               target_modules=ckpt["vae_lora_encoder_modules"]), adapter_name="default_encoder")
    for n, p in vae.named_parameters():
        if "lora" in n:
            p.data.copy_(ckpt["state_dict_vae"][n])
    vae.set_adapter(["default_encoder"])
    return unet.eval(), vae.eval()


def authors_style_hero(base_dir, pkl_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    ckpt = torch.load(pkl_path, weights_only=True)
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    unet.add_adapter(LoraConfig(r=ckpt["rank_unet"], init_lora_weights="gaussian",
                                target_modules=ckpt["unet_lora_target_modules"]))
    sd = unet.state_dict()
    sd.update(ckpt["state_dict_unet"])
    unet.load_state_dict(sd)
    vae.add_adapter(LoraConfig(r=ckpt["rank_vae"], init_lora_weights="gaussian",
                               target_modules=ckpt["vae_lora_target_modules"]), adapter_name="vae")
    sd = vae.state_dict()
    sd.update(ckpt["state_dict_vae"])
    vae.load_state_dict(sd)
    return unet.eval(), vae.eval(), ckpt["state_dict_time_adaptive"]


def clip_embedding(base_dir, text: str) -> torch.Tensor:
    from transformers import AutoTokenizer, CLIPTextModel

    tok = AutoTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder").eval()
    ids = tok(text, max_length=tok.model_max_length, padding="max_length", truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids)[0]


@torch.no_grad()
def one_step_formula(unet, vae, alphas_cumprod, x, t: int, emb) -> torch.Tensor:
    """OSEDiff's one step (arXiv:2406.08177, docs/engine.md) written out: mean latent, eps at t, z0 = (z - sqrt(1-a) eps) / sqrt(a), decode, clamp."""
    sf = vae.config.scaling_factor
    z = vae.encode(x).latent_dist.mean * sf
    eps = unet(z, torch.tensor([t]), encoder_hidden_states=emb).sample
    a = alphas_cumprod[t].double()
    z0 = (z.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()
    return vae.decode(z0.float() / sf).sample.clamp(-1, 1)


@torch.no_grad()
def one_step_ddpm(unet, vae, scheduler, x, t: int, emb) -> torch.Tensor:
    """The same step through diffusers' DDPMScheduler.step with one inference step (the authors' OSEDiff code)."""
    sf = vae.config.scaling_factor
    # One inference step at t (diffusers >= 0.27 looks t up in the schedule, so give it explicitly).
    scheduler.set_timesteps(timesteps=[t])
    z = vae.encode(x).latent_dist.mean * sf
    eps = unet(z, torch.tensor([t]), encoder_hidden_states=emb).sample
    z0 = scheduler.step(eps, t, z, return_dict=True).prev_sample
    return vae.decode(z0 / sf).sample.clamp(-1, 1)
