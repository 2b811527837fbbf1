"""The training loop on accelerate (one GPU, many GPUs or nodes, or CPU processes).

Layout of the output directory (itself an srx model directory, loadable with ``--model DIR``)::

    OUTPUT/srx_model.json, weights.safetensors    # the latest exported model
    OUTPUT/train_config.json                      # the resolved TrainConfig
    OUTPUT/checkpoints/step-000500/               # trainable.safetensors, optimizer-*.pt, state.json
    OUTPUT/logs/train.jsonl                       # every loss term, every log step (TensorBoard too if installed)
    OUTPUT/validation/step-000500/*.png           # validation images through the inference engine

Every random draw of a step is seeded from ``(seed, step, process)``, and checkpoints hold the
trainable weights and optimizer states, so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from ..io.fsio import atomic_write, write_text
from ..models.checkpoints import safe_torch_load, write_model_dir
from .config import TrainConfig
from .data import CropDataset, StepBatchSampler, step_generator
from .methods import METHODS, TrainMethod, build_method

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    step: int
    output: Path
    last_losses: dict[str, float]
    seconds: float


def resolve_base_dir(cfg: TrainConfig) -> Path | None:
    from ..models import hub
    from ..models.loading import base_override

    base = METHODS[cfg.method].base_model(cfg)
    if base is None:  # the lite model and the distilled students have no base diffusion model
        return None
    return hub.resolve_base(base_override(base), f"train:{cfg.method}")


def make_optimizers(method: TrainMethod, cfg: TrainConfig):
    gen = torch.optim.AdamW(method.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    aux_opt = None
    if method.aux is not None:
        aux_opt = torch.optim.AdamW([p for _, p in method.aux_parameters()], lr=cfg.lr_aux,
                                    weight_decay=cfg.weight_decay)
    return gen, aux_opt


def _trainable(method: TrainMethod) -> dict[str, torch.nn.Parameter]:
    """Every trainable tensor of the generator (``gen.``) and the auxiliary network (``aux.``), by name."""
    params = {f"gen.{n}": p for n, p in method.generator_parameters()}
    return params | {f"aux.{n}": p for n, p in method.aux_parameters()}


def trainable_state(method: TrainMethod) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().contiguous() for k, p in _trainable(method).items()}


def load_trainable_state(method: TrainMethod, state: dict[str, torch.Tensor]) -> None:
    params = _trainable(method)
    missing = sorted(set(params) - set(state))
    if missing:
        raise UsageError(f"checkpoint does not match this method/config (missing {missing[0]} …)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name].to(p.device, p.dtype))


def latest_checkpoint(output: Path) -> Path | None:
    folder = output / CHECKPOINTS
    done = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file()) if folder.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(output: Path, step: int, method, gen_opt, aux_opt, cfg: TrainConfig) -> Path:
    from safetensors.torch import save_file

    folder = output / CHECKPOINTS / f"step-{step:06d}"
    tmp = folder.with_name(folder.name + ".tmp")
    # Each file through srx's atomic writer (on disk before the folder is renamed, with the umask's mode).
    state = trainable_state(method)
    atomic_write(tmp / "trainable.safetensors", writer=lambda path: save_file(state, str(path)))
    atomic_write(tmp / "optimizer-gen.pt", writer=lambda path: torch.save(gen_opt.state_dict(), path))
    if aux_opt is not None:
        atomic_write(tmp / "optimizer-aux.pt", writer=lambda path: torch.save(aux_opt.state_dict(), path))
    write_text(tmp / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
    write_text(tmp / "state.json", json.dumps({"step": step}))  # written last: marks the checkpoint complete
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_checkpoint(folder: Path, method, gen_opt, aux_opt) -> int:
    from safetensors.torch import load_file

    load_trainable_state(method, load_file(str(folder / "trainable.safetensors")))
    gen_opt.load_state_dict(safe_torch_load(folder / "optimizer-gen.pt"))
    if aux_opt is not None:
        aux_opt.load_state_dict(safe_torch_load(folder / "optimizer-aux.pt"))
    return int(json.loads((folder / "state.json").read_text())["step"])


def export_model(method: TrainMethod, output: Path) -> Path:
    return write_model_dir(output, *method.export())


class Logger:
    """Console line + JSONL (+ TensorBoard when installed), on the main process only."""

    def __init__(self, output: Path, enabled: bool, echo=print):
        self.enabled, self.echo = enabled, echo
        self.tb = None
        if enabled:
            (output / "logs").mkdir(parents=True, exist_ok=True)
            self.file = open(output / "logs" / "train.jsonl", "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output / "logs"))
            except Exception:  # tensorboard not installed
                self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        self.echo(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def validate(method: TrainMethod, cfg: TrainConfig, output: Path, step: int, device) -> list[Path]:
    """Upscale the validation images through the inference engine with the current weights (8-bit images
    through the engine's 8-bit input path, as ``srx upscale`` reads them)."""
    from ..engine.pipeline import SRModel, tensor_to_pil
    from ..io.imageio import read_image

    spec = method.model_spec()
    folder = output / "validation" / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    was_training = method.training
    method.eval()
    try:
        model = SRModel(spec, method.net, device, torch.float32)
        for path in cfg.validation_images:
            sr = model.upscale_tensor(read_image(path).model_input)
            dest = folder / f"{Path(path).stem}.png"
            tensor_to_pil(sr).save(dest)
            written.append(dest)
    finally:
        method.train(was_training)
    return written


def train(cfg: TrainConfig, echo=print) -> TrainResult:
    """Run (or resume) training as configured; returns the final step and output directory."""
    from accelerate import Accelerator

    from ..data.degradation import DegradationConfig, RealESRGANDegradation
    from ..models.loading import quiet_libraries

    quiet_libraries()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    output = Path(cfg.output)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_text(output / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
    base_dir = resolve_base_dir(cfg)
    folders = METHODS[cfg.method].training_data(cfg, echo, main_process=True) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if folders is None:
        folders = METHODS[cfg.method].training_data(cfg, echo, main_process=False)
    dataset = CropDataset(folders, cfg.resolution, cfg.scale, clean=METHODS[cfg.method].clean_data(cfg))
    torch.manual_seed(cfg.seed)  # LoRA/DTSM/discriminator init: the same in every process and every run
    method = build_method(cfg, base_dir)
    gen_opt, aux_opt = make_optimizers(method, cfg)
    start = 0
    if cfg.resume:
        ckpt = latest_checkpoint(output)
        if ckpt is None:
            raise UsageError(f"--resume: no checkpoint in {output / CHECKPOINTS}")
        start = load_checkpoint(ckpt, method, gen_opt, aux_opt)
        # The optimizer state carries the old learning rates: the current config's win (e.g. a lower --lr).
        for opt, lr in ((gen_opt, cfg.lr), (aux_opt, cfg.lr_aux)):
            for group in opt.param_groups if opt is not None else []:
                group["lr"] = lr
        echo(f"resumed from {ckpt} (step {start})")
    aux = method.aux
    if aux is not None and accelerator.num_processes > 1:
        # The auxiliary network has its own optimizer and its own DDP wrapper (below): the generator's
        # wrapper must neither own nor wait for its gradients.
        ignored = [f"aux.{n}" for n, _ in [*aux.named_parameters(), *aux.named_buffers()]]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, ignored)
    method, gen_opt = accelerator.prepare(method, gen_opt)
    aux_wrapped = None
    if aux is not None:
        aux_wrapped, aux_opt = accelerator.prepare(aux, aux_opt)
    plain = accelerator.unwrap_model(method)
    device = accelerator.device
    method.train()
    degrade = RealESRGANDegradation(DegradationConfig(scale=cfg.scale, bicubic_prob=cfg.bicubic_prob,
                                                      **cfg.degradation))
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, accelerator.process_index,
                               accelerator.num_processes, start * cfg.grad_accum, cfg.max_steps * cfg.grad_accum)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers)
    logger = Logger(output, accelerator.is_main_process, echo)
    step, micro = start, start * cfg.grad_accum
    last: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for batch in loader:
            torch.manual_seed(step_generator(cfg.seed, micro, accelerator.process_index, stream=3).initial_seed())
            hq, clean = batch["hq"].to(device), batch["clean"].to(device)
            if "lq" in batch:
                lq = batch["lq"].to(device)
            else:
                lq = degrade(hq, step_generator(cfg.seed, micro, accelerator.process_index, stream=2))
                clean = torch.tensor(degrade.last_params["bicubic"], device=device)  # plain bicubic draws
            factor = cfg.lr_factor(step)
            for opt, lr in ((gen_opt, cfg.lr), (aux_opt, cfg.lr_aux)):
                for group in opt.param_groups if opt is not None else []:
                    group["lr"] = lr * factor
            with accelerator.accumulate(method):
                terms = method(lq, hq, clean)
                accelerator.backward(terms["total"])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(plain.trainable_parameters(), cfg.max_grad_norm)
                gen_opt.step()
                gen_opt.zero_grad(set_to_none=True)
            if aux_wrapped is not None:
                with accelerator.accumulate(aux_wrapped):
                    aux_opt.zero_grad(set_to_none=True)  # drop what the generator's backward left here
                    aux_terms = aux_wrapped(*terms["aux_inputs"])
                    accelerator.backward(aux_terms["total"])
                    aux_opt.step()
                    aux_opt.zero_grad(set_to_none=True)
                terms = terms | {k: v for k, v in aux_terms.items() if k != "total"}
            micro += 1
            if micro % cfg.grad_accum:
                continue
            step += 1
            last = {k: float(v.detach()) for k, v in terms.items() if torch.is_tensor(v) and v.dim() == 0}
            last["lr"] = cfg.lr * factor
            for k, v in last.items():
                if v != v or v in (float("inf"), float("-inf")):
                    raise UsageError(f"step {step}: loss {k} is {v}; lower --lr or use --mixed-precision no/bf16")
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                logger.log(step, last)
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(output, step, plain, gen_opt.optimizer if hasattr(gen_opt, "optimizer") else gen_opt,
                                    (aux_opt.optimizer if hasattr(aux_opt, "optimizer") else aux_opt), cfg)
                    export_model(plain, output)
                accelerator.wait_for_everyone()
            if cfg.validate_every and cfg.validation_images and step % cfg.validate_every == 0 \
                    and accelerator.is_main_process:
                validate(plain, cfg, output, step, device)
    finally:
        logger.close()
    accelerator.wait_for_everyone()
    return TrainResult(step, output, last, time.perf_counter() - started)
