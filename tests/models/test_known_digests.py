"""Large weights files are hashed once per version of the file, not on every load; `verify` always re-reads."""

from __future__ import annotations

import hashlib
import os

import pytest

from sr_cli.models import hub


@pytest.fixture()
def big_file(tmp_path, monkeypatch):
    """A "large" weights file (the threshold lowered to 1 KiB) in a private srx cache."""
    monkeypatch.setenv("SRX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "REMEMBER_DIGESTS_FROM", 1024)
    monkeypatch.setattr(hub, "_DIGESTS", {})
    weights = tmp_path / "big.pth"
    weights.write_bytes(os.urandom(4096))
    return weights


def forge_remembered_digest(truth: str, forged: str) -> None:
    """Tamper with the memory on disk (as a stale or forged record would) and forget the process's copy."""
    hub._DIGESTS.clear()
    path = hub.cache_root() / hub.DIGESTS_FILE
    path.write_text(path.read_text().replace(truth, forged))


def test_large_file_digest_is_remembered_across_processes_and_follows_changes(big_file, monkeypatch):
    weights = big_file
    truth = hashlib.sha256(weights.read_bytes()).hexdigest()

    assert hub.sha256_file(weights) == truth
    assert (hub.cache_root() / hub.DIGESTS_FILE).is_file()
    hub._DIGESTS.clear()  # a new process: only the file on disk remembers
    reads = []
    real_open = open

    def counting_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if str(path) == str(weights):
            real_read = f.read
            f.read = lambda *ra: (reads.append(1), real_read(*ra))[1]
        return f

    monkeypatch.setattr("builtins.open", counting_open)
    assert hub.sha256_file(weights) == truth
    assert reads == []  # the remembered digest was used: the file was not read

    # The file changes (same size): its identity changes and it is hashed again.
    hub._DIGESTS.clear()
    weights.write_bytes(os.urandom(4096))
    assert hub.sha256_file(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert reads


def test_fresh_hash_ignores_a_remembered_digest(big_file):
    weights = big_file
    truth = hub.sha256_file(weights)
    forge_remembered_digest(truth, "0" * 64)
    assert hub.sha256_file(weights) == "0" * 64
    assert hub.sha256_file(weights, fresh=True) == truth


def test_small_files_are_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("SRX_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 100)
    hub.sha256_file(small)
    assert not (hub.cache_root() / hub.DIGESTS_FILE).exists()


def test_reading_every_file_ignores_and_repairs_a_remembered_digest(big_file):
    weights = big_file
    truth = hub.sha256_file(weights)
    forge_remembered_digest(truth, "f" * 64)
    with hub.reading_every_file():
        assert hub.sha256_file(weights) == truth
    assert hub._trust_remembered  # only inside the block
    hub._DIGESTS.clear()
    assert hub.sha256_file(weights) == truth  # the fresh digest replaced the forged record
