"""Getting weights onto disk: the Hugging Face cache, hashed URL downloads, manual files.

Base diffusion models come from the Hugging Face Hub through ``huggingface_hub`` (its cache,
``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens). One-step weights that live elsewhere
(a GitHub URL, a Google Drive file the user downloads) go into ``$HF_HOME/srx`` (or
``$SRX_CACHE``): ``downloads/<model>/<file>``, with their sha256 recorded in
``sha256.lock.json`` on first download and checked on every later load, and
``converted/<sha256>/`` holding the safetensors conversion (srx's saved-model layout).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import SrxError, UnknownModelError, WeightsIntegrityError, WeightsMissingError
from ..io.fsio import atomic_write, lock_path_for, locked
from .registry import BaseModel, ModelSpec, WeightsSource

# Only what the engine loads: fp32 safetensors and configs (SD repos also hold .bin, fp16, ckpt files).
BASE_MODEL_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
LOCK_FILE = "sha256.lock.json"


def cache_root() -> Path:
    if os.environ.get("SRX_CACHE"):
        return Path(os.environ["SRX_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "srx"


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# Digests computed in this process, by file identity: loading a model hashes its files when they are verified
# and again to find their converted copy (hundreds of MB for the ResShift family). Any change to a file
# (size, modification time, inode) makes it hashed again.
_DIGESTS: dict[tuple, str] = {}
DIGESTS_FILE = "known_digests.json"
# Files smaller than this are simply hashed again: remembering them would cost more than it saves.
REMEMBER_DIGESTS_FROM = 64 << 20
_trust_remembered = True


@contextlib.contextmanager
def reading_every_file():
    """Within this block every file is read in full to hash it, remembered digests aside (``srx models verify``)."""
    global _trust_remembered
    previous, _trust_remembered = _trust_remembered, False
    try:
        yield
    finally:
        _trust_remembered = previous


def _known_digests_path() -> Path:
    return cache_root() / DIGESTS_FILE


def _remembered(identity: tuple) -> str | None:
    try:
        known = json.loads(_known_digests_path().read_text(encoding="utf-8"))
        entry = known.get(identity[0])
        return entry["sha256"] if entry and tuple(entry["identity"]) == identity[1:] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember(identity: tuple, digest: str) -> None:
    path = _known_digests_path()
    try:
        with locked(lock_path_for(path)):
            try:
                known = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                known = {}
            known = known if isinstance(known, dict) else {}
            known[identity[0]] = {"identity": list(identity[1:]), "sha256": digest}
            atomic_write(path, json.dumps(known, indent=2, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only cache: the digest is just computed again next time


def sha256_file(path: str | Path, chunk: int = 1 << 20, fresh: bool = False) -> str:
    """sha256 of a file. Large files (weights of several GB, e.g. RAM's 5.6 GB) are hashed once per version of
    the file: the digest is remembered with the file's identity (device, inode, size, mtime and ctime in
    nanoseconds — ctime changes on every write and cannot be set back by a user), so every later load does not
    read them in full again. ``fresh`` (``srx models verify``) always reads the whole file."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        identity = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        remember = st.st_size >= REMEMBER_DIGESTS_FROM
        if not fresh and _trust_remembered:
            digest = _DIGESTS.get(identity) or (_remembered(identity) if remember else None)
            if digest:
                _DIGESTS[identity] = digest
                return digest
        h = hashlib.sha256()
        while block := f.read(chunk):
            h.update(block)
    _DIGESTS[identity] = h.hexdigest()
    if remember:
        _remember(identity, _DIGESTS[identity])
    return _DIGESTS[identity]


# ----------------------------------------------------------------------------- sha256 lock


def _lock_path() -> Path:
    return cache_root() / LOCK_FILE


def read_lock() -> dict[str, str]:
    try:
        return json.loads(_lock_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:
        raise WeightsIntegrityError(f"{_lock_path()}: corrupt lock file; delete it to re-record hashes") from None


def record_hash(key: str, digest: str) -> None:
    path = _lock_path()
    with locked(lock_path_for(path)):  # parallel runs each add their hash: read-modify-write under a lock
        lock = read_lock()
        lock[key] = digest
        atomic_write(path, json.dumps(lock, indent=2, sort_keys=True).encode("utf-8"))


def verify_file(path: Path, key: str, pinned: str | None, remedy: str = "", fresh: bool = False) -> str:
    """Hash ``path``; compare with the pinned hash, else with the recorded one (record it if none).

    ``remedy``: what the user can do about a mismatch (a command that exists, see ``remedies``).
    ``fresh``: read the whole file even when its digest is remembered (see ``sha256_file``).
    """
    digest = sha256_file(path, fresh=fresh)
    expected = pinned or read_lock().get(key)
    if expected is None:
        try:
            record_hash(key, digest)
        except OSError:
            pass  # a read-only cache: the file is used, its hash just cannot be remembered for next time
    elif digest != expected.lower():
        raise WeightsIntegrityError(
            f"{path}: sha256 mismatch (expected {expected.lower()}, the file has {digest}); the file was not used"
            + (f". {remedy}" if remedy else "")
        )
    return digest


# ----------------------------------------------------------------------------- base models


def resolve_base(base: BaseModel, model_name: str, download: bool = True) -> Path:
    """Local directory (diffusers layout) of a base model: a path as is, else the Hub snapshot."""
    if base.path:
        path = Path(base.path).expanduser()
        if not (path / "unet").is_dir():
            raise WeightsMissingError(f"{path}: not a diffusers model directory (no unet/ inside)")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(base.repo, revision=base.revision, allow_patterns=BASE_MODEL_FILES,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if not download or offline():
        from .registry import registry

        known = registry().get(model_name)
        fetch = (f"run `srx models download {model_name}` with network access"
                 if known is not None and known.base == base else "run srx once with network access")
        raise WeightsMissingError(
            f"base model {base.repo}@{base.revision} for {model_name!r} is not in the Hugging Face cache and srx is "
            f"offline: {fetch}, or point --base at a diffusers directory"
        )
    try:
        return Path(snapshot_download(base.repo, revision=base.revision, allow_patterns=BASE_MODEL_FILES))
    except Exception as e:  # network and auth errors of huggingface_hub
        raise WeightsMissingError(f"could not download base model {base.repo}@{base.revision}: {e}") from None


# ----------------------------------------------------------------------------- one-step weights


def autoencoder_spec(spec: ModelSpec) -> ModelSpec:
    """The spec under which a model's separate autoencoder file is resolved (ResShift family).

    Models that share the file (ResShift, SinSR, HF-Diff all use ResShift's ``autoencoder_vq_f4.pth``) share
    one cached copy: it is kept under a name derived from its source, not from the model.
    """
    import hashlib
    from dataclasses import replace

    src = spec.autoencoder
    origin = src.url or (f"{src.repo}@{src.revision}" if src.repo else src.filename)
    return replace(spec, name="shared-" + hashlib.sha256(origin.encode()).hexdigest()[:12], weights=src,
                   part_of=spec.name)


def tagger_file_spec(spec: ModelSpec, which: str) -> ModelSpec:
    """The spec under which a model's prompt-extractor file (``ram`` or ``dape``: OSEDiff) is resolved, imported
    and hashed (``downloads/<model>/<file>`` in the srx cache, or the Hugging Face cache for RAM)."""
    from dataclasses import replace

    return replace(spec, weights=getattr(spec, which), part_of=None)


def estimator_spec(spec: ModelSpec) -> ModelSpec:
    """The spec under which a model's degradation estimator file is resolved (S3Diff's ``de_net.pth``), cached
    under the model's own name (``part_of`` names the model for messages)."""
    from dataclasses import replace

    if spec.estimator is None:
        raise UnknownModelError(f"model {spec.name!r} names no [estimator] weights file")
    return replace(spec, weights=spec.estimator, part_of=spec.name)


def manual_path(spec: ModelSpec) -> Path:
    return cache_root() / "downloads" / spec.name / spec.weights.filename


def _lock_key(spec: ModelSpec) -> str:
    return f"{spec.name}/{spec.weights.filename}"


def remedies(spec: ModelSpec) -> dict[str, str]:
    """The commands that get this spec's file, for messages: ``download`` and ``import`` (when they apply).

    Only registry models have them (a --weights file or a model directory is the user's own file), and only
    as the registry describes them (a spec whose weights were overridden is not what ``download`` fetches).
    """
    from .registry import registry

    name = spec.part_of or spec.name
    known = registry().get(name)
    if known is None:
        return {}
    # A part of a model (ResShift's autoencoder, S3Diff's degradation estimator) or its own weights.
    parts = (known.autoencoder, known.estimator) if spec.part_of is not None else (known.weights,)
    if spec.weights is None or spec.weights not in parts:
        return {}
    autoencoder = spec.part_of is not None and spec.weights == known.autoencoder
    out = {}
    if spec.weights.kind in ("hub", "url"):
        out["download"] = f"`srx models download {name}` (with network access)"
    if spec.weights.kind in ("url", "manual"):
        flag = " --autoencoder" if autoencoder else ""
        out["import"] = f"`srx models import {name} {spec.weights.filename}{flag}` (a copy you downloaded)"
    return out


def _remedy_text(spec: ModelSpec) -> str:
    r = remedies(spec)
    return " or ".join(r.values())


def _download_url(url: str, dest: Path) -> None:
    import urllib.request  # http.client, email: imported only for a download (srx --help stays quick)

    def fetch(tmp: Path) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)

    with locked(lock_path_for(dest)):  # two runs needing the same file download it once
        if not dest.is_file():
            atomic_write(dest, writer=fetch)


def resolve_weights(spec: ModelSpec, download: bool = True) -> Path:
    """Local path of a model's weights file, verified against its sha256 (pinned or recorded)."""
    src: WeightsSource = spec.weights
    if src.kind == "embedded":
        raise WeightsMissingError(f"the embedded {spec.name!r} model is missing from this installation "
                                  f"({src.path}); reinstall srx")
    if src.kind == "local":
        path = Path(src.path).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"{path}: weights file not found")
        if src.sha256:
            verify_file(path, f"local:{path}", src.sha256)
        return path
    remedy = _remedy_text(spec)
    remedy = f"Delete it and run {remedy}" if remedy else ""
    imported = manual_path(spec)
    if imported.is_file():  # downloaded from a URL, or imported by hand (`srx models import`)
        verify_file(imported, _lock_key(spec), src.sha256, remedy)
        return imported
    if src.kind == "hub":
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(hf_hub_download(src.repo, src.filename, revision=src.revision, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError):
            if not download or offline():
                fetch = _remedy_text(spec)
                raise WeightsMissingError(
                    f"weights {src.repo}/{src.filename} for {spec.part_of or spec.name!r} are not in the Hugging Face "
                    f"cache and srx is offline" + (f": run {fetch}" if fetch else "")
                ) from None
            try:
                path = Path(hf_hub_download(src.repo, src.filename, revision=src.revision))
            except Exception as e:
                raise WeightsMissingError(f"could not download {src.repo}/{src.filename}: {e}") from None
        verify_file(path, _lock_key(spec), src.sha256, remedy)
        return path

    path = manual_path(spec)
    if not path.is_file():
        if src.kind == "manual":
            raise WeightsMissingError(
                f"{spec.name!r} needs {src.filename}, which is not downloaded automatically. {src.instructions} "
                f"(it is then kept at {path})"
            )
        if not download or offline():
            fetch = _remedy_text(spec)
            what = "autoencoder" if spec.part_of else "weights"
            raise WeightsMissingError(
                f"{what} {src.filename} for {spec.part_of or spec.name!r} are not in the srx cache ({path}) and srx "
                f"is offline" + (f": run {fetch}" if fetch else "")
            )
        try:
            _download_url(src.url, path)
        except Exception as e:
            raise WeightsMissingError(f"could not download {src.url}: {e}") from None
    verify_file(path, _lock_key(spec), src.sha256, remedy)
    return path


def import_weights(spec: ModelSpec, file: Path) -> Path:
    """Copy a hand-downloaded weights file into the cache (atomically) and record its hash."""
    dest = manual_path(spec)
    digest = ""

    def copy(tmp: Path) -> None:
        nonlocal digest
        shutil.copyfile(file, tmp)
        digest = sha256_file(tmp)
        if spec.weights.sha256 and digest != spec.weights.sha256.lower():
            raise WeightsIntegrityError(
                f"{file}: sha256 {digest} differs from the pinned {spec.weights.sha256.lower()}; not imported"
            )

    try:
        with locked(lock_path_for(dest)):
            atomic_write(dest, writer=copy)  # the user's umask decides its mode, as for any file srx writes
        record_hash(_lock_key(spec), digest)
    except OSError as e:
        reason = e.strerror or str(e)
        raise SrxError(f"{dest}: cannot write ({reason}{': ' + str(e.filename) if e.filename else ''})") from None
    return dest


def converted_dir(digest: str) -> Path:
    return cache_root() / "converted" / digest
