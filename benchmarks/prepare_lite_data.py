"""Prepare the lite model's training data from a folder of photographs (e.g. Debian's wallpaper packages).

    python benchmarks/prepare_lite_data.py wallpapers/ data/ [SHORT_SIDE [HELD_OUT]]

Keeps images whose short side is at least 1000 px, one per wallpaper folder (the largest: plasma ships each
wallpaper at many sizes), shuffles them with seed 0, holds out the first 6 as validation (`data/val_hr`,
plus scikit-image's sample photographs when installed), downscales the rest to a 1024 px short side
(cleaner, denser detail) and cuts them into 320 px tiles (`data/train_tiles`, fast to load).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

EXTS = (".jpg", ".jpeg", ".png", ".webp")


def main(src: Path, dst: Path, held_out: int = 6, short_side: int = 1024, tile: int = 320) -> None:
    candidates = {}
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() not in EXTS:
            continue
        try:
            with Image.open(p) as im:
                size = im.size
        except OSError:
            continue
        if min(size) < 1000:
            continue
        key = str(p.parent) if ("plasma" in str(p) or "wallpapers/" in str(p)) else str(p)
        if key not in candidates or min(size) > candidates[key][1]:
            candidates[key] = (p, min(size))
    chosen = sorted(str(p) for p, _ in candidates.values())
    random.seed(0)
    random.shuffle(chosen)
    val, train = chosen[:held_out], chosen[held_out:]
    (dst / "val_hr").mkdir(parents=True, exist_ok=True)
    (dst / "train_tiles").mkdir(parents=True, exist_ok=True)
    for split, files in (("val_hr", val), ("train", train)):
        for i, path in enumerate(files):
            im = Image.open(path).convert("RGB")
            s = short_side / min(im.size)
            if s < 1:
                im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
            stem = f"{i:03d}_{Path(path).stem}"
            if split == "val_hr":
                im.save(dst / "val_hr" / f"{stem}.png")
                continue
            for top in range(0, im.height - 256 + 1, tile):
                for left in range(0, im.width - 256 + 1, tile):
                    box = (left, top, min(left + tile, im.width), min(top + tile, im.height))
                    im.crop(box).save(dst / "train_tiles" / f"{stem}_{top}_{left}.png")
    try:
        import skimage.data as samples

        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"):
            Image.fromarray(getattr(samples, name)()).save(dst / "val_hr" / f"skimage_{name}.png")
    except ImportError:
        pass
    print(f"{len(train)} training images -> {len(list((dst / 'train_tiles').iterdir()))} tiles; "
          f"{len(list((dst / 'val_hr').iterdir()))} held-out images")


if __name__ == "__main__":
    extra = [int(a) for a in sys.argv[3:5]]
    main(Path(sys.argv[1]), Path(sys.argv[2]), **dict(zip(("short_side", "held_out"), extra)))
