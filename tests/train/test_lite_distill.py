"""`srx distill --method lite`: teacher targets made once (resumable, reproducible), the student learns them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from helpers.tiny import make_hq_folder
from sr_cli.cli import app
from sr_cli.data.resize import bicubic_downsample
from sr_cli.errors import UsageError
from sr_cli.models.loading import load_model
from sr_cli.train.teacher_targets import TargetPlan, build_targets
from sr_cli.train.teachers import load_teacher

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_hq_folder(tmp_path_factory.mktemp("photos"), n=3, size=336)


def _pixels(path):
    return np.asarray(Image.open(path))


def test_teacher_targets_are_reproducible_resumable_and_tied_to_their_teacher(photos, tmp_path):
    teacher = load_teacher("lite")
    plan = TargetPlan(teacher.ident, patches=3, clean=2)
    out = tmp_path / "targets"
    folders = build_targets([str(photos)], out, plan, teacher, echo=lambda s: None)
    assert [f.split("/")[-1] for f in folders] == ["teacher", "clean"]
    assert _pixels(out / "teacher" / "LR" / "00000.png").shape == (64, 64, 3)
    assert _pixels(out / "teacher" / "HR" / "00000.png").shape == (256, 256, 3)
    # A clean pair is the photo and its 8-bit antialiased bicubic x1/4.
    hr = torch.from_numpy(_pixels(out / "clean" / "HR" / "00001.png") / 255.0).permute(2, 0, 1)[None].float()
    lr = (bicubic_downsample(hr, 4).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(lr, _pixels(out / "clean" / "LR" / "00001.png"))
    # An interrupted build resumes with the very same pair.
    first = (out / "teacher" / "HR" / "00001.png").read_bytes(), (out / "teacher" / "LR" / "00001.png").read_bytes()
    (out / "teacher" / "HR" / "00001.png").unlink()
    (out / "teacher" / "LR" / "00001.png").unlink()
    build_targets([str(photos)], out, plan, teacher, echo=lambda s: None)
    assert ((out / "teacher" / "HR" / "00001.png").read_bytes(),
            (out / "teacher" / "LR" / "00001.png").read_bytes()) == first
    # Other settings (or another teacher) over the same cache are refused, never mixed in.
    with pytest.raises(UsageError, match="patches"):
        build_targets([str(photos)], out, TargetPlan(teacher.ident, patches=4, clean=2), teacher)
    with pytest.raises(UsageError, match="teacher"):
        build_targets([str(photos)], out, TargetPlan("ncnn:other", patches=3, clean=2), teacher)


def test_teacher_targets_made_with_another_camera_recipe_are_refused(photos, tmp_path, monkeypatch):
    from sr_cli.train import teacher_targets

    teacher = load_teacher("lite")
    plan = TargetPlan(teacher.ident, patches=0, clean=0, mild=1)
    out = tmp_path / "targets"
    build_targets([str(photos)], out, plan, teacher, echo=lambda s: None)
    assert json.loads((out / "targets.json").read_text())["mild_degradation"]["jpeg_range"] == [85, 98]
    build_targets([str(photos)], out, plan, teacher)  # the same recipe: the complete cache is read as it is
    monkeypatch.setattr(teacher_targets, "MILD", {**teacher_targets.MILD, "noise_range": (0.5, 4.0)})
    with pytest.raises(UsageError, match="mild_degradation"):
        build_targets([str(photos)], out, plan, teacher)


def test_teacher_patches_are_drawn_where_the_photographs_have_edges(tmp_path):
    from sr_cli.train.edges import gradient_magnitude
    from sr_cli.train.teacher_targets import _edge_rich_crop

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (336, 336), (120, 130, 140)).save(folder / "a_flat.png")
    texture = np.random.default_rng(0).integers(0, 256, (336, 336, 3), dtype=np.uint8)
    Image.fromarray(texture).save(folder / "b_texture.png")
    images = sorted(folder.iterdir())

    def flat(candidates, seed):
        crop = _edge_rich_crop(images, 64, torch.Generator().manual_seed(seed), candidates)
        return float(gradient_magnitude(crop).mean()) == pytest.approx(0.0, abs=1e-2)

    assert any(flat(1, seed) for seed in range(10))  # one candidate: a plain random crop, often the flat photo
    assert not any(flat(6, seed) for seed in range(10))
    # The choice is recorded with the cache: another number of candidates over it is refused.
    teacher = load_teacher("lite-faithful")  # one weight set: the same network whatever the input
    out = tmp_path / "targets"
    build_targets([str(folder)], out, TargetPlan(teacher.ident, patches=1, clean=0, candidates=4), teacher,
                  echo=lambda s: None)
    assert json.loads((out / "targets.json").read_text())["candidates"] == 4
    with pytest.raises(UsageError, match="candidates"):
        build_targets([str(folder)], out, TargetPlan(teacher.ident, patches=1, clean=0), teacher)


def test_teacher_target_is_the_teachers_output_away_from_the_patch_border(photos, tmp_path):
    teacher = load_teacher("lite-faithful")  # one weight set: the same network whatever the input
    out = tmp_path / "targets"
    build_targets([str(photos)], out, TargetPlan(teacher.ident, patches=1, clean=0), teacher, echo=lambda s: None)
    lr = torch.from_numpy(_pixels(out / "teacher" / "LR" / "00000.png") / 255.0).permute(2, 0, 1)[None].float()
    target = _pixels(out / "teacher" / "HR" / "00000.png").astype(int)
    again = (teacher(lr)[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    # The target is that output of the teacher where the patch's own border is far: it saw 8 more LR pixels on
    # every side (lite's receptive field is wider than that, so the interior moves a little too).
    diff = np.abs(again - target).mean(axis=2)
    inner, border = diff[64:192, 64:192].mean(), np.concatenate([diff[:8].ravel(), diff[-8:].ravel()]).mean()
    assert inner < 0.5 and border > 4 * inner, (inner, border)


def _distill(photos, out, *extra):
    return runner.invoke(app, ["distill", "--method", "lite", "--teacher", "lite-faithful", "--data", str(photos),
                               "-o", str(out), "--teacher-patches", "3", "--clean-share", "0", "--max-steps", "1",
                               "--lr", "0", "--resolution", "128", "--batch-size", "2", "--log-every", "1",
                               "--checkpoint-every", "1", *extra])


def test_distilled_lite_starts_from_its_student_and_learns_the_teachers_outputs(photos, tmp_path):
    same = _distill(photos, tmp_path / "same", "--student", "lite")  # lite's faithful set: the teacher
    assert same.exit_code == 0, same.output
    fresh = _distill(photos, tmp_path / "fresh")
    assert fresh.exit_code == 0, fresh.output
    loss = {name: json.loads((tmp_path / name / "logs" / "train.jsonl").read_text().splitlines()[-1])["l1"]
            for name in ("same", "fresh")}
    # A student equal to the teacher nearly meets the targets (up to 8-bit rounding and its crops' borders); the
    # identity start (bicubic) does not.
    assert loss["same"] < 0.6 * loss["fresh"], loss
    # lr 0: the exported model is exactly its student.
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    got = load_model(str(tmp_path / "same"), device="cpu", dtype="fp32").upscale_tensor(x)
    want = load_model("lite-faithful", device="cpu", dtype="fp32").upscale_tensor(x)
    assert torch.equal(got, want)


def test_frequency_loss_term_is_weighted_in_when_asked(photos, tmp_path):
    result = _distill(photos, tmp_path / "fft", "--loss-weight", "fft=0.5")
    assert result.exit_code == 0, result.output
    logged = json.loads((tmp_path / "fft" / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert logged["fft"] > 0
    assert logged["total"] == pytest.approx(logged["l1"] + 0.5 * logged["fft"], rel=1e-5)


def test_gradient_term_compares_sobel_edge_maps_and_is_weighted_in(photos, tmp_path):
    from sr_cli.train.edges import gradient_magnitude

    step = torch.zeros(1, 3, 6, 16)
    step[..., 8:] = 1.0  # a gray vertical edge between columns 7 and 8
    g = gradient_magnitude(step)
    assert g.shape == (1, 4, 14)
    want = torch.zeros(14)
    want[6:8] = 4.0  # Sobel's (1, 2, 1) rows across a unit step; the map starts at column 1 (no padding)
    assert torch.allclose(g[0], want.expand(4, 14), atol=1e-3)
    result = _distill(photos, tmp_path / "grad", "--loss-weight", "grad=0.5")
    assert result.exit_code == 0, result.output
    logged = json.loads((tmp_path / "grad" / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert logged["grad"] > 0
    assert logged["total"] == pytest.approx(logged["l1"] + 0.5 * logged["grad"], rel=1e-5)


def test_grid_term_measures_the_pattern_that_repeats_on_the_pixel_shuffle_grid(photos, tmp_path):
    from sr_cli.train.edges import grid_pattern

    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 24, 32).clone()
    tile = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.01  # a grain of ~1 level
    grainy = smooth + tile.repeat(6, 8)
    assert torch.allclose(grid_pattern(grainy, 4) - grid_pattern(smooth, 4), tile - tile.mean(), atol=1e-6)
    assert grid_pattern(torch.full((1, 3, 8, 8), 0.3), 4).abs().max() < 1e-7  # flat: nothing repeats
    # A grain whose sign follows the content cancels over the image; windows of 4 x 4 cells (16 px) see it.
    flips = torch.cat([tile.repeat(4, 4), -tile.repeat(4, 4)], dim=1).expand(1, 3, 16, 32)
    assert grid_pattern(flips, 4).abs().max() < 1e-7
    local = grid_pattern(flips, 4, cells=4)
    assert local.shape == (1, 3, 1, 4, 2, 4)
    assert torch.allclose(local[0, 0, 0, :, 1, :], -(tile - tile.mean()), atol=1e-6)
    result = _distill(photos, tmp_path / "grid", "--loss-weight", "grid=2")
    assert result.exit_code == 0, result.output
    logged = json.loads((tmp_path / "grid" / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert logged["grid"] > 0
    assert logged["total"] == pytest.approx(logged["l1"] + 2 * logged["grid"], rel=1e-5)


def test_distill_lite_refuses_a_student_of_another_shape(photos, tmp_path):
    result = _distill(photos, tmp_path / "bad", "--student", "lite", "--config", str(_recipe(tmp_path)))
    assert result.exit_code == 2
    assert "--student lite: not a lite model" in result.output


def _recipe(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text("method: lite\nlite_channels: [8, 16, 24]\nlite_blocks: 1\n")
    return path


def test_distill_takes_the_method_its_recipe_names(photos, tmp_path):
    recipe = tmp_path / "sharp.yaml"
    recipe.write_text("method: lite\nteacher: lite\nteacher_patches: 2\nclean_share: 0.5\nresolution: 128\n"
                      "batch_size: 1\nmax_steps: 1\nlog_every: 1\n")
    result = runner.invoke(app, ["distill", "--config", str(recipe), "--data", str(photos), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "train_config.json").read_text())["method"] == "lite"
    assert len(list((tmp_path / "r" / "teacher_targets" / "clean" / "HR").iterdir())) == 2


def test_paired_folders_among_the_data_are_trained_on_as_they_are(photos, tmp_path):
    from sr_cli.train.config import resolve_config
    from sr_cli.train.methods.lite import LiteMethod

    pairs = tmp_path / "text"
    for sub, side in (("HR", 256), ("LR", 64)):
        (pairs / sub).mkdir(parents=True)
        Image.new("RGB", (side, side), "white").save(pairs / sub / "t0.png")
    cfg = resolve_config("lite", None, data=[str(photos), str(pairs)], output=str(tmp_path / "run"),
                         teacher="lite", teacher_patches=1, clean_share=0.5)
    folders = LiteMethod.training_data(cfg, echo=lambda s: None)
    assert folders == [str(tmp_path / "run" / "teacher_targets" / "teacher"),
                       str(tmp_path / "run" / "teacher_targets" / "clean"), str(pairs)]
    only_pairs = resolve_config("lite", None, data=[str(pairs)], output=str(tmp_path / "run2"), teacher="x")
    with pytest.raises(UsageError, match="no folder of photographs"):
        LiteMethod.training_data(only_pairs, echo=lambda s: None)


def test_adversarial_term_trains_a_discriminator_beside_the_student(photos, tmp_path):
    result = _distill(photos, tmp_path / "gan", "--loss-weight", "adv=0.01", "--lr", "1e-4", "--lr-aux", "1e-4")
    assert result.exit_code == 0, result.output
    logged = json.loads((tmp_path / "gan" / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert logged["disc"] > 0  # the hinge loss of the PatchGAN (real: the targets, fake: the student's outputs)
    assert logged["total"] == pytest.approx(logged["l1"] + 0.01 * logged["adv"], rel=1e-5)
    from safetensors.torch import load_file

    state = load_file(str(next((tmp_path / "gan" / "checkpoints").iterdir()) / "trainable.safetensors"))
    assert any(k.startswith("aux.") for k in state) and any(k.startswith("gen.") for k in state)
    # The exported model is the student alone: what inference runs.
    exported = load_file(str(tmp_path / "gan" / "weights.safetensors"))
    assert exported and all(k.startswith("net.") for k in exported)



def test_clean_pairs_are_marked_and_left_out_of_the_adversarial_term(photos, tmp_path):
    from sr_cli.train.config import resolve_config
    from sr_cli.train.data import CropDataset
    from sr_cli.train.methods.lite import LiteMethod

    cfg = resolve_config("lite", None, data=[str(photos)], output=str(tmp_path / "run"), teacher="lite",
                         teacher_patches=2, clean_share=0.5, resolution=64, loss_weights={"adv": 0.01})
    folders = LiteMethod.training_data(cfg, echo=lambda s: None)
    data = CropDataset(folders, 64, 4, clean=LiteMethod.clean_data(cfg))
    marked = {str(hr.parent.parent.name): c for (hr, _), c in zip(data.items, data.clean)}
    assert marked == {"teacher": False, "clean": True}
    assert [bool(data[(i, 0)]["clean"]) for i in range(len(data))] == data.clean

    torch.manual_seed(0)
    method = LiteMethod(cfg)
    g = torch.Generator().manual_seed(1)
    lq, hq = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 64, 64, generator=g)
    clean = torch.tensor([True, False, True, False])
    with torch.no_grad():
        terms, (real, fake) = method.loss_terms(lq, hq, clean)
        every, (real_all, _) = method.loss_terms(lq, hq)  # unknown: every sample counts
        _, (real_clean, _) = method.loss_terms(lq, hq, torch.ones(4, dtype=torch.bool))
    # The discriminator and the student's adversarial term see the degraded samples only.
    assert torch.equal(real, hq[[1, 3]] * 2 - 1)
    with torch.no_grad():
        assert terms["adv"] == pytest.approx(float(-method.aux.score(fake).mean()), rel=1e-6)
    assert real_all.shape[0] == 4 and every["l1"] == pytest.approx(float(terms["l1"]), rel=1e-6)
    # A batch of clean samples only still gives the discriminator something to learn from.
    assert real_clean.shape[0] == 4


def test_distill_takes_the_learning_rate_schedule_flags_train_takes(photos, tmp_path):
    out = tmp_path / "cos"
    result = _distill(photos, out, "--lr", "1e-3", "--lr-schedule", "cosine", "--lr-decay-start", "0",
                      "--lr-min", "1e-5", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "train_config.json").read_text())
    assert (cfg["lr_schedule"], cfg["lr_decay_start"], cfg["lr_min"]) == ("cosine", 0, 1e-5)
    lrs = [json.loads(line)["lr"] for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(1e-3) and 1e-5 < lrs[1] < 1e-3
