"""Benchmark datasets: the registry (``datasets_manifest.toml``), folder layouts, pairing, downloads.

A dataset resolves to an ``EvalSet``: a list of ``Sample`` (name, LR path, HR path or None). Named
benchmarks come from the manifest and are downloaded into ``$HF_HOME/srx/datasets/<name>/`` (or found
with ``--dataset-dir``); any folder works too (``--dataset PATH``): with ``HR/`` and ``LR/``
sub-folders (or the published names ``test_HR``/``test_LR``, ``gt``/``lq``) it is paired, a folder
of images alone is evaluated with no-reference metrics only.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import ManifestError, SrxError, UsageError
from ..io.imagefiles import image_extensions, list_images
from ..models.registry import build_table  # typed tables, unknown keys are errors: one rule for both manifests

LR_DIR_NAMES = ("LR", "lr", "test_LR", "lq", "LQ", "input")
HR_DIR_NAMES = ("HR", "hr", "test_HR", "gt", "GT", "target")
SOURCE_KINDS = ("github", "hf-zip", "manual")


class DatasetMissingError(SrxError):
    """A named dataset is not on disk and cannot be fetched (offline, or manual download)."""

    exit_code = 2


@dataclass(frozen=True)
class DatasetSource:
    kind: str
    repo: str = ""
    commit: str = ""
    folder: str = ""
    filename: str = ""
    revision: str = "main"
    member: str = ""
    instructions: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    paper_name: str
    pairs: bool
    count: int
    scale: int
    license: str
    lr_dir: str
    hr_dir: str
    source: DatasetSource


@dataclass(frozen=True)
class Sample:
    name: str  # file stem, unique within the set
    lr: Path
    hr: Path | None


@dataclass
class EvalSet:
    name: str  # registry name, or the folder's name
    root: Path
    samples: list[Sample]
    paper_name: str | None = None  # the name used in paper_numbers.csv
    notes: list[str] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return bool(self.samples) and all(s.hr is not None for s in self.samples)

    def limited(self, limit: int | None) -> "EvalSet":
        if not limit:
            return self
        return EvalSet(self.name, self.root, self.samples[:limit], self.paper_name, list(self.notes))


# ----------------------------------------------------------------------------- the registry


def parse_datasets(text: str, where: str = "datasets_manifest.toml") -> dict[str, DatasetSpec]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{where}: {e}") from None
    out = {}
    for name, table in doc.items():
        table = dict(table)
        source = build_table(DatasetSource, table.pop("source", None), f"{where} [{name}.source]")
        if source.kind not in SOURCE_KINDS:
            raise ManifestError(f"{where} [{name}.source]: kind must be one of {', '.join(SOURCE_KINDS)}")
        out[name] = build_table(DatasetSpec, {"name": name, **table, "source": source}, f"{where} [{name}]")
    return out


@lru_cache(maxsize=1)
def dataset_registry() -> dict[str, DatasetSpec]:
    text = resources.files("sr_cli").joinpath("datasets_manifest.toml").read_text(encoding="utf-8")
    return parse_datasets(text)


# ----------------------------------------------------------------------------- folders and pairing


def _find_sub(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


# A suffix that marks one side of a pair: RealSR "Canon_001_LR4" / "Canon_001_HR", BasicSR's DIV2K "0801x4",
# Set5 "baby_GT". Names are compared without it when the full names do not match.
_SIDE_SUFFIX = re.compile(r"[_\-.]?(?:x\d+|lr\d*|hr\d*|lq|gt)$", re.IGNORECASE)


def pair_key(stem: str) -> str:
    """A file stem without the LR/HR marks at its end (``Canon_001_LR4`` -> ``canon_001``)."""
    key = stem
    for _ in range(2):  # e.g. "img_LR_x4"
        shorter = _SIDE_SUFFIX.sub("", key)
        if not shorter or shorter == key:
            break
        key = shorter
    return key.lower()


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def pair_images(lr_files: list[Path], hr_files: list[Path], where: Path) -> tuple[list[Sample], list[str]]:
    """Pair LR and HR images by name: the same stem, else the same stem without LR/HR marks (``pair_key``).

    Never by position: an LR image without its HR image is a usage error naming every unpaired file
    (scoring it against another image's HR would give a number that looks right and is not). HR
    images without an LR image are reported in a note and not used.
    """
    stems = [p.stem for p in lr_files]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        same = [p for p in lr_files if p.stem in twins]
        raise UsageError(f"{where}: LR images {_names(same)} share a name; keep one file per name")
    hr_by_stem = {p.stem: p for p in hr_files}
    pairs: dict[Path, Path] = {lr: hr_by_stem[lr.stem] for lr in lr_files if lr.stem in hr_by_stem}
    lr_left = [p for p in lr_files if p not in pairs]
    used = set(pairs.values())
    hr_left = [p for p in hr_files if p not in used]
    notes: list[str] = []
    if lr_left and hr_left:
        def by_key(paths: list[Path]) -> dict[str, list[Path]]:
            out: dict[str, list[Path]] = {}
            for p in paths:
                out.setdefault(pair_key(p.stem), []).append(p)
            return out

        lr_keys, hr_keys = by_key(lr_left), by_key(hr_left)
        matched = {lr[0]: hr_keys[k][0] for k, lr in lr_keys.items() if len(lr) == 1 and len(hr_keys.get(k, [])) == 1}
        if matched:
            lr0, hr0 = next(iter(matched.items()))
            notes.append(f"{where}: {len(matched)} LR/HR names differ by an LR/HR mark (e.g. {lr0.name} and "
                         f"{hr0.name}); paired by the name without it")
        pairs.update(matched)
        lr_left = [p for p in lr_left if p not in matched]
        hr_left = [p for p in hr_left if p not in set(matched.values())]
    if lr_left:
        extra = f"; no LR image for {_names(hr_left)}" if hr_left else ""
        raise UsageError(f"{where}: no HR image of the same name for {_names(lr_left)}{extra} "
                         f"(LR and HR images are paired by file name, marks such as _LR4/_HR or x4 aside)")
    if hr_left:
        notes.append(f"{where}: no LR image for {_names(hr_left)}: not used")
    return [Sample(p.stem, p, pairs[p]) for p in lr_files], notes


def folder_set(root: Path, name: str | None = None, lr_dir: str | None = None, hr_dir: str | None = None,
               paper_name: str | None = None) -> EvalSet:
    """An EvalSet from a folder: HR/LR sub-folders (paired) or a folder of LR images (no reference)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"{root}: dataset folder not found")
    lr = root / lr_dir if lr_dir else _find_sub(root, LR_DIR_NAMES)
    hr = (root / hr_dir if hr_dir else _find_sub(root, HR_DIR_NAMES)) if hr_dir != "" else None
    if lr is None and hr is None:
        lr = root  # a plain folder of images: no-reference metrics only
    if lr is None:
        raise UsageError(f"{root}: has {hr.name}/ but no LR folder (one of {', '.join(LR_DIR_NAMES)})")
    if not lr.is_dir():
        raise UsageError(f"{lr}: folder not found")
    lr_files = list_images(lr)
    if not lr_files:
        raise UsageError(f"{lr}: no images")
    notes: list[str] = []
    if hr is not None and hr.is_dir():
        samples, notes = pair_images(lr_files, list_images(hr), root)
    else:
        samples = [Sample(p.stem, p, None) for p in lr_files]
    return EvalSet(name or root.name, root, samples, paper_name, notes)


# ----------------------------------------------------------------------------- named datasets


def datasets_root() -> Path:
    from ..models.hub import cache_root

    return cache_root() / "datasets"


def resolve_dataset(dataset: str, dataset_dir: Path | None = None, download: bool = True) -> EvalSet:
    """``--dataset NAME`` (registry) or ``--dataset PATH`` (a folder); ``--dataset-dir`` locates a named set."""
    registry = dataset_registry()
    if dataset not in registry:
        if Path(dataset).expanduser().is_dir():
            return folder_set(Path(dataset))
        raise UsageError(f"unknown dataset {dataset!r}: use one of {', '.join(registry)} or a folder path")
    spec = registry[dataset]
    root = Path(dataset_dir).expanduser() if dataset_dir else fetch_dataset(spec, download)
    if dataset_dir:
        # A user's copy may use the published names or HR/LR; accept both.
        lr = spec.lr_dir if (root / spec.lr_dir).is_dir() else None
        hr = spec.hr_dir if spec.hr_dir and (root / spec.hr_dir).is_dir() else ("" if not spec.pairs else None)
        return folder_set(root, spec.name, lr, hr, spec.paper_name)
    return folder_set(root, spec.name, spec.lr_dir, spec.hr_dir if spec.pairs else "", spec.paper_name)


def _complete_marker(root: Path) -> Path:
    return root / ".srx-complete.json"


def fetch_dataset(spec: DatasetSpec, download: bool = True) -> Path:
    """The dataset's folder in the cache, downloaded on first use (complete or not at all)."""
    root = datasets_root() / spec.name
    if _complete_marker(root).is_file():
        return root
    from ..io.fsio import lock_path_for, locked

    with locked(lock_path_for(root), best_effort=True):  # parallel runs download it once; the others wait
        if _complete_marker(root).is_file():
            return root
        return _download_dataset(spec, root, download)


def _download_dataset(spec: DatasetSpec, root: Path, download: bool) -> Path:
    from ..io.fsio import atomic_dir, write_text

    src = spec.source
    if src.kind == "manual":
        raise DatasetMissingError(f"dataset {spec.name!r} is not downloaded by srx: {src.instructions}")
    from ..models.hub import offline

    allow_network = download and not offline()
    if src.kind == "github" and not allow_network:
        raise _offline_error(spec, root)
    try:
        with atomic_dir(root) as staging:  # a half-downloaded dataset never appears under its name
            if src.kind == "github":
                files = _download_github_folder(src, staging)
            else:
                zip_path = _hf_zip(src, allow_network)
                if zip_path is None:
                    raise _offline_error(spec, root)
                files = extract_member(zip_path, src.member, staging)
    except BaseException as e:
        if isinstance(e, (SrxError, KeyboardInterrupt)):
            raise
        raise DatasetMissingError(f"could not download dataset {spec.name!r}: {e}") from None
    write_text(_complete_marker(root), json.dumps({"files": files, "source": src.__dict__}, indent=1))
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def github_tree_paths(tree: dict, folder: str) -> list[str]:
    """Image files under ``folder`` in a GitHub ``git/trees?recursive=1`` answer."""
    prefix = folder.rstrip("/") + "/"
    exts = image_extensions()
    return sorted(e["path"] for e in tree.get("tree", []) if e.get("type") == "blob"
                  and e["path"].startswith(prefix) and Path(e["path"]).suffix.lower() in exts)


def _download_github_folder(src: DatasetSource, dest: Path) -> int:
    from .net import fetch_bytes, fetch_json

    tree = fetch_json(f"https://api.github.com/repos/{src.repo}/git/trees/{src.commit}?recursive=1")
    paths = github_tree_paths(tree, src.folder)
    if not paths:
        raise DatasetMissingError(f"{src.repo}@{src.commit}: no images under {src.folder}")
    for path in paths:
        data = fetch_bytes(f"https://raw.githubusercontent.com/{src.repo}/{src.commit}/{path}")
        target = dest / Path(path).relative_to(src.folder)
        _mkdir(target.parent).joinpath(target.name).write_bytes(data)
    return len(paths)


def extract_member(zip_path: Path, member: str, dest: Path) -> int:
    """Extract the files under ``member/`` of a zip into ``dest`` (paths are checked: no escaping ``dest``)."""
    prefix = member.rstrip("/") + "/"
    count = 0
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = Path(info.filename[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise DatasetMissingError(f"{zip_path}: unsafe path {info.filename!r} in the archive")
            target = dest / rel
            _mkdir(target.parent)
            with zf.open(info) as f_in, open(target, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, 1 << 20)
            count += 1
    if not count:
        raise DatasetMissingError(f"{zip_path}: no files under {prefix} in the archive")
    return count


def _offline_error(spec: DatasetSpec, root: Path) -> DatasetMissingError:
    where = f"{spec.lr_dir}/ and {spec.hr_dir}/" if spec.pairs else "LR"
    return DatasetMissingError(
        f"dataset {spec.name!r} is not in the srx cache ({root}) and srx is offline: run once with network "
        f"access, or pass --dataset-dir FOLDER holding its {where} images")


def _hf_zip(src: DatasetSource, allow_network: bool) -> Path | None:
    """The dataset zip from the Hugging Face cache (downloaded when allowed); None when offline and absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from ..models.hub import verify_file

    try:
        path = Path(hf_hub_download(src.repo, src.filename, repo_type="dataset", revision=src.revision,
                                    local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        if not allow_network:
            return None
        path = Path(hf_hub_download(src.repo, src.filename, repo_type="dataset", revision=src.revision))
    verify_file(path, f"dataset:{src.repo}/{src.filename}", None)
    return path

