"""Image-quality metrics through pyiqa, with the papers' settings (OSEDiff's, arXiv:2406.08177; docs/engine.md).

pyiqa is an optional extra (``srx[eval]``; PolyForm Noncommercial license). Its metrics that need
pretrained weights download them on first use into ``$TORCH_HOME/hub/pyiqa`` (or torchvision's
``hub/checkpoints``); offline, such a metric is reported as unavailable with the file it needs, and
the other metrics are still computed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import SrxError, UsageError


@dataclass(frozen=True)
class MetricDef:
    name: str  # srx's name (as in paper_numbers.csv)
    pyiqa_name: str
    kind: str  # "fr" full reference (SR vs HR), "nr" no reference (SR alone), "set" (SR folder vs HR folder)
    lower_better: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


# PSNR/SSIM on the Y channel of YCbCr (BT.601), no border crop: OSEDiff's test_metrics.py settings.
# pyiqa's default Y would be YIQ, which gives ~1.3 dB less on RealSR.
Y_CHANNEL = {"test_y_channel": True, "color_space": "ycbcr"}
METRICS: dict[str, MetricDef] = {m.name: m for m in [
    MetricDef("psnr", "psnr", "fr", False, Y_CHANNEL),
    MetricDef("ssim", "ssim", "fr", False, Y_CHANNEL),
    MetricDef("ms_ssim", "ms_ssim", "fr", False, Y_CHANNEL),
    MetricDef("lpips", "lpips", "fr", True),
    MetricDef("dists", "dists", "fr", True),
    MetricDef("fid", "fid", "set", True),
    MetricDef("niqe", "niqe", "nr", True),
    MetricDef("musiq", "musiq", "nr"),
    MetricDef("maniqa", "maniqa-pipal", "nr"),
    MetricDef("clipiqa", "clipiqa", "nr"),
    MetricDef("topiq_nr", "topiq_nr", "nr"),
    MetricDef("hyperiqa", "hyperiqa", "nr"),
    MetricDef("arniqa", "arniqa", "nr"),
    MetricDef("tres", "tres", "nr"),
    MetricDef("qalign", "qalign", "nr"),
]}
DEFAULT_PAIRED = ("psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa")
DEFAULT_UNPAIRED = ("niqe", "musiq", "maniqa", "clipiqa")


class PyiqaMissingError(SrxError):
    exit_code = 2


class MetricFailed(SrxError):
    """A metric raised on one input (an image smaller than its window...): that image's error, one line."""


class MetricUnavailable(Exception):
    """A metric that cannot be computed here (its message is one line for the user)."""


def parse_metric_list(text: str | None, paired: bool) -> list[MetricDef]:
    """``--metrics a,b,c`` (or the default set); full-reference metrics are dropped on unpaired data."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()] if text else \
        list(DEFAULT_PAIRED if paired else DEFAULT_UNPAIRED)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    defs = [METRICS[n] for n in dict.fromkeys(names)]
    if not paired:
        defs = [m for m in defs if m.kind == "nr"]
        if not defs:
            raise UsageError("the dataset has no HR images: choose no-reference metrics "
                             f"({', '.join(n for n, m in METRICS.items() if m.kind == 'nr')})")
    return defs


def import_pyiqa():
    try:
        import pyiqa  # noqa: F401 - heavy; imported only when metrics are computed
    except ImportError as e:
        raise PyiqaMissingError(f"metrics need pyiqa: pip install 'srx[eval]' ({e})") from None
    return pyiqa


def _offline() -> bool:
    from ..models.hub import offline

    return offline()


def _missing(metric: str, dst, url: str) -> MetricUnavailable:
    return MetricUnavailable(f"metric {metric!r} needs pretrained weights that are not on disk: {dst} "
                             f"(from {url}); srx is offline: run once with network access or put the file there")


@contextlib.contextmanager
def weights_downloads_reported(metric: str):
    """Turn pyiqa's, torchvision's, CLIP's and timm's weight downloads into a MetricUnavailable naming the file.

    Offline, no connection is attempted: the first missing file ends the metric's creation at once.
    The libraries fetch through module-level functions, wrapped for the duration of one metric's
    creation only: ``download_url_to_file(url, destination)`` (pyiqa, torchvision), pyiqa's CLIP
    ``_download(url, root)`` (clipiqa: ``urllib`` directly, it knows no offline mode) and timm's
    ``hf_hub_download`` (maniqa's ViT backbone, from the Hugging Face Hub).
    """
    import torch.hub as torch_hub
    from pyiqa.archs import clip_model
    from pyiqa.utils import download_util
    from timm.models import _hub as timm_hub

    originals = (download_util.download_url_to_file, torch_hub.download_url_to_file, clip_model._download,
                 timm_hub.hf_hub_download)

    def guarded(url, dst, *args, **kwargs):
        if _offline():
            raise _missing(metric, dst, url)
        try:
            return originals[1](url, dst, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - network errors come in many kinds
            raise MetricUnavailable(f"metric {metric!r}: could not download {url} to {dst} ({e})") from None

    def guarded_clip(url, root):
        dst = os.path.join(root, os.path.basename(url))
        if _offline() and not os.path.isfile(dst):
            raise _missing(metric, dst, url)
        try:
            return originals[2](url, root)
        except Exception as e:  # noqa: BLE001
            raise MetricUnavailable(f"metric {metric!r}: could not download {url} to {dst} ({e})") from None

    def guarded_hf(repo_id, filename, *args, revision=None, cache_dir=None, **kwargs):
        try:
            return originals[3](repo_id, filename, *args, revision=revision, cache_dir=cache_dir, **kwargs)
        except FileNotFoundError:  # LocalEntryNotFoundError: offline and not in the cache
            from huggingface_hub import constants

            url = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{filename}"
            where = f"{filename} of {repo_id} in the Hugging Face cache {cache_dir or constants.HF_HUB_CACHE}"
            if _offline():
                raise _missing(metric, where, url) from None
            raise MetricUnavailable(f"metric {metric!r}: could not download {url} (no copy of {where})") from None

    download_util.download_url_to_file = guarded
    torch_hub.download_url_to_file = guarded
    clip_model._download = guarded_clip
    timm_hub.hf_hub_download = guarded_hf
    try:
        yield
    finally:
        (download_util.download_url_to_file, torch_hub.download_url_to_file, clip_model._download,
         timm_hub.hf_hub_download) = originals


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def library_deprecations_silenced():
    """pyiqa builds torchvision networks with ``pretrained=`` and calls SciPy with ``disp=``: the deprecation
    warnings that triggers are addressed to pyiqa's developers, not to srx users (filtered by message only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The parameter 'pretrained' is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="Arguments other than a weight enum", category=UserWarning)
        warnings.filterwarnings("ignore", message="The `disp` argument is deprecated", category=DeprecationWarning)
        yield


class MetricSuite:
    """The requested metrics, created once; ``unavailable`` maps a metric to why it is not computed."""

    def __init__(self, defs: list[MetricDef], device: torch.device):
        self.defs = defs
        self.device = device
        self.models: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        pyiqa = import_pyiqa()
        for m in defs:
            try:
                with weights_downloads_reported(m.name), contextlib.redirect_stdout(_Sink()), \
                        library_deprecations_silenced():
                    self.models[m.name] = pyiqa.create_metric(m.pyiqa_name, device=device, **m.kwargs)
            except MetricUnavailable as e:
                self.unavailable[m.name] = str(e)
            except Exception as e:  # noqa: BLE001 - a broken metric must not stop the others
                self.unavailable[m.name] = f"metric {m.name!r} could not be created ({_one_line(e)})"

    @property
    def image_metrics(self) -> list[MetricDef]:
        return [m for m in self.defs if m.kind != "set" and m.name in self.models]

    @property
    def set_metrics(self) -> list[MetricDef]:
        return [m for m in self.defs if m.kind == "set" and m.name in self.models]

    @torch.inference_mode()
    def score_image(self, sr: torch.Tensor, hr: torch.Tensor | None) -> dict[str, float]:
        """Per-image metrics; ``sr``/``hr`` are (1, 3, H, W) RGB in [0, 1] (8-bit values, as read from PNG)."""
        out = {}
        for m in self.image_metrics:
            if m.kind == "fr" and hr is None:
                continue
            try:
                if m.kind == "fr":
                    value = self.models[m.name](sr.to(self.device), hr.to(self.device))
                else:
                    value = self.models[m.name](sr.to(self.device))
            except Exception as e:  # noqa: BLE001 - pyiqa raises anything on an input it cannot take
                raise MetricFailed(f"metric {m.name!r} cannot score this image ({_one_line(e)})") from None
            out[m.name] = float(value.item() if torch.is_tensor(value) else value)
        return out

    def score_sets(self, sr_dir, hr_dir) -> tuple[dict[str, float], dict[str, str]]:
        """Set metrics (FID) of two folders: (values, one-line errors of the metrics that failed)."""
        out, errors = {}, {}
        for m in self.set_metrics:
            try:
                with contextlib.redirect_stdout(_Sink()), library_deprecations_silenced():
                    value = self.models[m.name](str(sr_dir), str(hr_dir), verbose=False, num_workers=0)
                out[m.name] = float(value)
            except Exception as e:  # noqa: BLE001 - a failing metric must not stop the report
                errors[m.name] = f"metric {m.name!r} failed on the sets of SR and HR images ({_one_line(e)})"
        return out, errors


class _Sink:
    """stdout sink: pyiqa prints 'Loading pretrained model ...' lines; srx keeps stdout for results."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass
