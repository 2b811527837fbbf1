"""Identities of tiny model files, recorded beside the authors'-code fixtures (``tests/fixtures/authors_parity``).

A recording is only valid for the files it was made with: each test first checks that the tiny builders still
produce files with the recorded digest. Digests are over tensors and configs, not bytes: pickles and JSON carry
pickling details and library versions that change nothing the networks compute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def checkpoint_digest(*paths: Path) -> str:
    """Identity of one or more ``torch.load``-able files by their tensors (nested dicts in sorted key order)."""
    import torch

    h = hashlib.sha256()

    def feed(obj):
        if isinstance(obj, dict):
            for k in sorted(obj):
                h.update(str(k).encode())
                feed(obj[k])
        elif isinstance(obj, torch.Tensor):
            h.update(obj.detach().float().contiguous().numpy().tobytes())
        else:
            h.update(repr(obj).encode())

    for path in paths:
        feed(torch.load(path, weights_only=True))
    return h.hexdigest()


def base_digest(directory: Path) -> str:
    """Identity of a diffusers base directory by its tensors and configs (without the library versions)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if path.suffix == ".safetensors":
            for k, v in sorted(load_file(str(path)).items()):
                h.update(k.encode())
                h.update(v.float().contiguous().numpy().tobytes())
        elif path.suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict):
                doc = {k: v for k, v in doc.items() if not k.startswith("_") and k != "transformers_version"}
            h.update(json.dumps(doc, sort_keys=True).encode())
    return h.hexdigest()
