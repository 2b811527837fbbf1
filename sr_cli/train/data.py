"""Training data: random crops of high-quality images (degraded on the device), or aligned paired crops.

Every random choice derives from ``(seed, step, rank)``, so a resumed run sees exactly the data the
uninterrupted run would have seen, and every process gets its own shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import UsageError


def list_images(folder: Path) -> list[Path]:
    """Training images below ``folder``, subfolders included (srx's one rule for which files are images)."""
    from ..io.imagefiles import list_images as images_in

    return images_in(folder, recursive=True)


def is_paired_folder(folder: str | Path) -> bool:
    """A paired training set: ``HR/`` and ``LR/`` subfolders with same-named images."""
    return (Path(folder) / "HR").is_dir() and (Path(folder) / "LR").is_dir()


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A generator for one (step, process, purpose): reproducible after a resume."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + rank) * 7 + stream)


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / 255.0).permute(2, 0, 1)


class CropDataset(Dataset):
    """Random ``resolution`` crops (with flips) of the images in some folders; LR made later on the device.

    A folder with ``HR/`` and ``LR/`` subfolders is a paired set: the LR crop is the aligned
    ``resolution / scale`` window of the same-named LR image. Every sample says whether it is ``clean``: from
    one of the ``clean`` folders, paired sets whose LR images are plain bicubic downsamplings.
    """

    def __init__(self, folders: list[str], resolution: int, scale: int, clean: list[str] = ()):
        self.resolution, self.scale = resolution, scale
        self.items: list[tuple[Path, Path | None]] = []
        self.clean: list[bool] = []  # per item
        clean_folders = {Path(f).resolve() for f in clean}
        for f in folders:
            folder = Path(f)
            if not folder.is_dir():
                raise UsageError(f"{folder}: training data folder not found")
            before = len(self.items)
            if is_paired_folder(folder):
                lr_by_stem = {p.stem: p for p in list_images(folder / "LR")}
                for hr in list_images(folder / "HR"):
                    if hr.stem not in lr_by_stem:
                        raise UsageError(f"{hr}: no LR image with the same name in {folder / 'LR'}")
                    self.items.append((hr, lr_by_stem[hr.stem]))
            else:
                self.items += [(p, None) for p in list_images(folder)]
            self.clean += [folder.resolve() in clean_folders] * (len(self.items) - before)
        if not self.items:
            raise UsageError(f"no training images found in {', '.join(folders)}")
        self.paired = all(lr is not None for _, lr in self.items)
        if not self.paired and any(lr is not None for _, lr in self.items):
            raise UsageError("mixing paired (HR/ + LR/) and unpaired folders is not supported")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        rng = np.random.default_rng(seed)
        hr_path, lr_path = self.items[index]
        hr = _load_rgb(hr_path)
        r = self.resolution
        if lr_path is None:
            h, w = hr.shape[:2]
            if min(h, w) < r:  # small images: enlarge so that a crop fits
                f = r / min(h, w)
                hr = np.asarray(Image.fromarray(hr).resize((max(r, round(w * f)), max(r, round(h * f))),
                                                           Image.Resampling.BICUBIC))
                h, w = hr.shape[:2]
            top, left = rng.integers(0, h - r + 1), rng.integers(0, w - r + 1)
            crop = hr[top : top + r, left : left + r]
            lq = None
        else:
            lr = _load_rgb(lr_path)
            s, rl = self.scale, r // self.scale
            h, w = lr.shape[:2]
            if h < rl or w < rl or hr.shape[0] < h * s or hr.shape[1] < w * s:
                raise UsageError(f"{lr_path}: LR image smaller than a training crop, or HR not {s}x its size")
            top, left = rng.integers(0, h - rl + 1), rng.integers(0, w - rl + 1)
            lq = lr[top : top + rl, left : left + rl]
            crop = hr[top * s : top * s + r, left * s : left * s + r]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            lq = lq[:, ::-1] if lq is not None else None
        item = {"hq": _to_tensor(crop), "clean": torch.tensor(self.clean[index])}
        if lq is not None:
            item["lq"] = _to_tensor(lq)
        return item


class StepBatchSampler(Sampler):
    """Yields, for each step from ``start_step``, this process's batch of ``(index, crop_seed)``."""

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int, world: int, start_step: int,
                 steps: int):
        self.n, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world, self.start, self.steps = rank, world, start_step, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def batch_for(self, step: int) -> list[tuple[int, int]]:
        g = step_generator(self.seed, step, stream=1)  # the same for all processes: one global batch
        total = self.batch_size * self.world
        idx = torch.randint(0, self.n, (total,), generator=g).tolist()
        seeds = torch.randint(0, 2**31 - 1, (total,), generator=g).tolist()
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)  # this process's shard
        return [(idx[i], seeds[i]) for i in mine]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.steps):
            yield self.batch_for(step)
