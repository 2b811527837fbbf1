"""A batch on two CPU worker processes (`--device cpu,cpu`) against one process (`--device cpu`).

    python benchmarks/sharding.py                        # 16 images of 256x256, lite, 3 runs each
    python benchmarks/sharding.py --images 32 --size 128 --runs 5

Times whole `srx upscale FOLDER -o OUT` processes, alternating the two settings so that machine load hits both
alike, each into a fresh output folder; prints the medians, their ratio and whether the files are identical.
The two-process run pays one more model load and process start; it wins when the batch is long enough.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SRX = [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def run(src: Path, out: Path, device: str, model: str) -> float:
    start = time.perf_counter()
    subprocess.run([*SRX, "upscale", str(src), "-o", str(out), "--model", model, "--device", device, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        np.array_equal(np.asarray(Image.open(a / n)), np.asarray(Image.open(b / n))) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="lite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray((rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)).save(src / f"{i:03d}.png")
        times: dict[str, list[float]] = {"cpu": [], "cpu,cpu": []}
        for r in range(args.runs):
            for device, measured in times.items():
                measured.append(run(src, Path(tmp) / f"{device}-{r}", device, args.model))
        one, two = (statistics.median(times[d]) for d in times)
        identical = same_files(Path(tmp) / "cpu-0", Path(tmp) / "cpu,cpu-0")
    print(f"{args.images} images of {args.size}x{args.size}, {args.model}, median of {args.runs}:")
    print(f"  one process (--device cpu):      {one:.1f} s")
    print(f"  two processes (--device cpu,cpu): {two:.1f} s  ({one / two:.2f}x)")
    print(f"  files identical: {identical}")


if __name__ == "__main__":
    main()
