"""Start-up cost of one `srx upscale` call, as a shell loop pays it once per file.

    python benchmarks/startup.py                 # 64x64 image, default model, 5 runs each
    python benchmarks/startup.py --runs 9 --size 128 --model lite

Times the whole process (start to exit, wall clock) of `srx upscale IMAGE -o OUT` and, as the floor any PyTorch
program pays, of `python -c "import torch"`, alternating the two so that machine load hits both alike; prints the
medians and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def wall_time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def srx_command() -> list[str]:
    """The installed `srx` script next to this Python, else the same entry point through this Python."""
    script = Path(sys.executable).parent / "srx"
    if script.is_file():
        return [str(script)]
    found = shutil.which("srx")
    return [found] if found else [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="input image side in pixels")
    ap.add_argument("--model", default=None, help="registry name or model directory (default: srx's default)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "in.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(image)
        model = ["--model", args.model] if args.model else []
        srx, torch_only = [], []
        for i in range(args.runs):
            srx.append(wall_time([*srx_command(), "upscale", str(image), "-o", str(Path(tmp) / f"out{i}.png"), "-q",
                                  *model]))
            torch_only.append(wall_time([sys.executable, "-c", "import torch"]))

    s, t = statistics.median(srx), statistics.median(torch_only)
    print(f"srx upscale {args.size}x{args.size} ({args.model or 'default model'}): median {s:.2f} s over {args.runs} runs "
          f"({', '.join(f'{x:.2f}' for x in srx)})")
    print(f'python -c "import torch": median {t:.2f} s over {args.runs} runs ({", ".join(f"{x:.2f}" for x in torch_only)})')
    print(f"ratio: {s / t:.2f}x")


if __name__ == "__main__":
    main()
