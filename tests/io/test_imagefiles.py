"""Which files are images (one rule for upscale, train and evaluate), output planning, folders built atomically
and encoding, tested directly on the functions (the CLI tests cover the same paths end to end)."""

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.files import current_umask
from PIL import Image
from typer.testing import CliRunner

from sr_cli.io.batch import Job, discover, plan_outputs
from sr_cli.cli import app
from sr_cli.evaluate.datasets import folder_set
from sr_cli.io.fsio import atomic_dir
from sr_cli.io.imagefiles import list_images
from sr_cli.io.imageio import encode_image, read_image
from sr_cli.train.data import list_images as training_images

RNG = np.random.default_rng(11)


def _png(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((RNG.random((size, size, 3)) * 255).astype(np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Images, hidden files, srx's temporary files, a save-only format and a subfolder."""
    root = tmp_path / "in"
    for name in ("a.png", "b.JPG", "sub/c.png", ".hidden.png", ".git/d.png", ".a.png.x1.srx-tmp", ".e.png.srx-claim"):
        _png(root / name)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "g.gif")
    Image.new("RGB", (8, 8)).save(root / "doc.pdf")  # Pillow writes PDF but cannot read it
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_scans_keep_only_visible_images_pillow_can_decode(mixed_folder):
    def names(paths):
        return [p.relative_to(mixed_folder).as_posix() for p in paths]

    assert names(list_images(mixed_folder)) == ["a.png", "b.JPG", "g.gif"]
    assert names(list_images(mixed_folder, recursive=True)) == ["a.png", "b.JPG", "g.gif", "sub/c.png"]


def test_upscale_train_and_evaluate_list_the_same_images(mixed_folder):
    upscaled = [job.source for job in discover([str(mixed_folder)], True, "_x4")]
    assert upscaled == list_images(mixed_folder, recursive=True)
    assert training_images(mixed_folder) == list_images(mixed_folder, recursive=True)
    assert [s.lr for s in folder_set(mixed_folder).samples] == list_images(mixed_folder)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_input_that_is_not_a_regular_file_is_refused_with_the_true_reason(tmp_path, kind):
    if kind == "fifo":
        source = tmp_path / "pipe.png"
        os.mkfifo(source)
        reason = "not a regular file (a named pipe (FIFO))"
    else:
        source = Path(os.devnull)
        reason = "not a regular file (a device)"
    jobs = discover([str(source)], False, "_x4")
    assert [(j.source, j.status) for j in jobs] == [(source, "pending")]
    r = CliRunner().invoke(app, ["upscale", str(source), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 1, r.output
    files = json.loads(r.stdout)["files"]
    assert [f["status"] for f in files] == ["failed"]
    assert files[0]["error"] == f"{source}: {reason}"


def test_a_dangling_symlink_input_is_reported_missing_before_any_model_loads(tmp_path):
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    jobs = discover([str(link)], False, "_x4")
    assert [(j.status, j.error) for j in jobs] == [("failed", f"{link}: no such file or directory")]


# ----------------------------------------------------------------------------- output planning


def _jobs(*sources: Path, relative: list[Path] | None = None) -> list[Job]:
    return [Job(s, relative=relative[i] if relative else None) for i, s in enumerate(sources)]


def test_outputs_go_beside_inputs_or_mirror_subfolders_into_the_output_folder(tmp_path):
    a, b = tmp_path / "a.jpeg", tmp_path / "sub" / "b.tiff"
    jobs = _jobs(a, b)
    plan_outputs(jobs, None, "same", "_x4", overwrite=False)
    assert [j.dest for j in jobs] == [tmp_path / "a_x4.jpeg", tmp_path / "sub" / "b_x4.tiff"]
    jobs = _jobs(a, b, relative=[Path("a.jpeg"), Path("sub/b.tiff")])
    plan_outputs(jobs, tmp_path / "out", "png", "", overwrite=False)
    assert [j.dest for j in jobs] == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.png"]
    assert [j.status for j in jobs] == ["pending", "pending"]


def test_planning_refuses_overwriting_an_input_and_skips_existing_outputs(tmp_path):
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    _png(tmp_path / "out" / "b.png")
    jobs = _jobs(a, b)
    plan_outputs(jobs, tmp_path, "png", "", overwrite=True)  # a.png -> a.png: the input itself
    assert [j.status for j in jobs] == ["failed", "failed"] and "is an input file" in jobs[0].error
    jobs = _jobs(a, b)
    plan_outputs(jobs, tmp_path / "out", "png", "", overwrite=False)
    assert [j.status for j in jobs] == ["pending", "skipped"] and "--overwrite" in jobs[1].error
    jobs = _jobs(a, b)
    plan_outputs(jobs, tmp_path / "out", "png", "", overwrite=True)
    assert [j.status for j in jobs] == ["pending", "pending"] and jobs[1].dest_before is not None


def test_two_inputs_with_one_output_are_settled_at_run_time(tmp_path):
    jobs = _jobs(tmp_path / "x" / "a.png", tmp_path / "y" / "a.jpg")
    plan_outputs(jobs, tmp_path / "out", "png", "", overwrite=False)
    assert jobs[0].dest == jobs[1].dest == tmp_path / "out" / "a.png"
    assert jobs[1].collides_with is jobs[0] and jobs[1].status == "pending"


def test_an_output_file_with_an_unknown_extension_fails_the_job(tmp_path):
    jobs = _jobs(tmp_path / "a.png")
    plan_outputs(jobs, tmp_path / "a.gifx", "png", "", overwrite=False, single_file=True)
    assert jobs[0].status == "failed" and "unknown output format '.gifx'" in jobs[0].error


# ----------------------------------------------------------------------------- folders built atomically


def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path):
    dest = tmp_path / "cache" / "set"
    with atomic_dir(dest) as staging:
        (staging / "one.txt").write_text("1")
        assert not dest.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["one.txt"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~current_umask()
    with pytest.raises(RuntimeError), atomic_dir(dest) as staging:
        (staging / "half.txt").write_text("h")
        raise RuntimeError("download failed")
    assert sorted(p.name for p in dest.iterdir()) == ["one.txt"]  # the old folder survives a failure
    with atomic_dir(dest) as staging:
        (staging / "two.txt").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["two.txt"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["set"]  # no staging or old copies left


# ----------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "WEBP", "JPEG"])
def test_encoding_keeps_the_pixels_in_every_format(fmt):
    y, x = np.mgrid[0:16, 0:16]
    arr = np.stack([x * 15, y * 15, (x + y) * 7], axis=-1).astype(np.uint8)  # smooth: lossy formats stay close
    color = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    data = encode_image(color, None, fmt, quality=100)
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    tolerance = {"WEBP": 12, "JPEG": 3}.get(fmt, 0)  # lossless formats: exact
    assert back.shape == arr.shape and np.abs(back - arr).max() <= tolerance


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gray_with_alpha_round_trips_exactly(tmp_path, fmt):
    values = RNG.integers(0, 65536, (6, 7, 2), dtype=np.uint16)
    t = torch.from_numpy(values.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    color = t[:, :1].expand(-1, 3, -1, -1)
    path = tmp_path / f"g.{fmt.lower()}"
    path.write_bytes(encode_image(color, t[:, 1:], fmt, grayscale=True, bit_depth=16))
    image = read_image(path)
    assert (image.grayscale, image.bit_depth, image.format) == (True, 16, fmt)
    assert np.array_equal(np.rint(image.color[0, 0].numpy() * 65535).astype(np.uint16), values[..., 0])
    assert np.array_equal(np.rint(image.alpha[0, 0].numpy() * 65535).astype(np.uint16), values[..., 1])
