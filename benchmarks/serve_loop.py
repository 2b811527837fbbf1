"""A shell loop of single-file `srx upscale` calls, with and without a warm `srx serve` worker.

    python benchmarks/serve_loop.py              # 100 calls each, 64x64 image, default model
    python benchmarks/serve_loop.py --n 20 --size 64

Each call is a whole process (start to exit, wall clock), as a loop in a shell script pays it. The model's own
work per file is the `seconds` the call's `--json` report gives for that file; what remains of the wall time is
the cost per call beyond the compute (process start, imports, model load, planning, the socket round trip).
The worker runs on a private runtime folder of its own and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import srx_command


def loop(srx: list[str], image: Path, out: Path, n: int, env: dict, extra: list[str]) -> tuple[float, float]:
    """(median wall seconds per call, median compute seconds per call)."""
    walls, computes = [], []
    for i in range(n):
        start = time.perf_counter()
        done = subprocess.run([*srx, "upscale", str(image), "-o", str(out / f"{i}.png"), "--json", *extra],
                              env=env, check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        computes.append(json.loads(done.stdout)["files"][0]["seconds"])
    return statistics.median(walls), statistics.median(computes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="calls per mode")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    args = parser.parse_args()
    srx = srx_command()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runtime = tmp / "runtime"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        image = tmp / "in.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(image)
        worker = subprocess.Popen([*srx, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (runtime / "srx" / "worker.sock").exists():
                if worker.poll() is not None:
                    sys.exit("srx serve did not start")
                time.sleep(0.2)
            (tmp / "w").mkdir()
            (tmp / "d").mkdir()
            served = loop(srx, image, tmp / "w", args.n, env, [])
            direct = loop(srx, image, tmp / "d", args.n, env, ["--no-server"])
        finally:
            subprocess.run([*srx, "serve", "--stop"], env=env, capture_output=True, check=False)
            worker.wait(timeout=60)
    print(f"{args.n} calls of `srx upscale` on a {args.size}x{args.size} image (medians per call):")
    for name, (wall, compute) in (("with srx serve", served), ("without (--no-server)", direct)):
        print(f"  {name:22s} wall {wall:6.2f} s   compute {compute:5.2f} s   beyond compute {wall - compute:6.2f} s")


if __name__ == "__main__":
    main()
