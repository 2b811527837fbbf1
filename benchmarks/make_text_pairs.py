"""Rendered-text training pairs for the lite model: clean bicubic x4 inputs whose target is the crisp text.

    python benchmarks/make_text_pairs.py data/text_pairs 120

Photographs (Debian's wallpapers) hold almost no text, and a model trained on them alone washes small dark
strokes on white out (the PSNR-oriented lite weights did: `benchmarks/lite_eval.py`'s text check). Each pair is a
256x256 HR image of a few lines of words in Pillow's bundled scalable font (Aileron, CC0), random sizes, colors
and backgrounds, and its antialiased bicubic x1/4 (8-bit), in ``DEST/HR`` and ``DEST/LR`` (a paired folder:
``srx train``/``srx distill`` use it as it is). Seeded: the same command gives the same files.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WORDS = ("super resolution srx lite photo image upscale model pixel detail sharp quick brown fox jumps over lazy dog "
         "0123456789 ABCDEFGHIJ KLMNOPQRST UVWXYZ Debian wallpaper street sign menu price page chapter invoice total "
         "Tuesday December 2026 www.example.org @srx #42 100% 3.14 (a+b)=c").split()


def render(rng: random.Random, size: int = 256) -> Image.Image:
    light = rng.random() < 0.7  # mostly dark text on a light ground, as pages and signs are
    ground = tuple(rng.randint(200, 255) if light else rng.randint(0, 70) for _ in range(3))
    ink = tuple(rng.randint(0, 60) if light else rng.randint(190, 255) for _ in range(3))
    im = Image.new("RGB", (size, size), ground)
    draw = ImageDraw.Draw(im)
    y = rng.randint(-8, 16)
    while y < size:
        font_size = rng.randint(14, 56)
        font = ImageFont.load_default(size=font_size)
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        draw.text((rng.randint(-20, 12), y), line, fill=ink, font=font)
        y += int(font_size * rng.uniform(1.1, 1.8))
    return im


def main(dest: Path, count: int) -> None:
    rng = random.Random(0)
    (dest / "HR").mkdir(parents=True, exist_ok=True)
    (dest / "LR").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        hr = render(rng)
        hr.save(dest / "HR" / f"text{i:04d}.png")
        hr.resize((hr.width // 4, hr.height // 4), Image.Resampling.BICUBIC).save(dest / "LR" / f"text{i:04d}.png")
    print(f"{count} text pairs in {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 120)
