"""Warnings that libraries address to their own developers never reach srx users' terminals."""

import warnings

import torch

from sr_cli.evaluate.metrics import METRICS, MetricSuite


def test_creating_pyiqa_networks_shows_no_torchvision_deprecations(tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    # No FID weights here: the Inception network is built (where torchvision warns), then its weights are missing.
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "pyiqa"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suite = MetricSuite([METRICS["fid"]], torch.device("cpu"))
    assert "pt_inception" in suite.unavailable["fid"]
    assert [str(w.message) for w in caught] == []
