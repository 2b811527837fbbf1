"""`srx models` and model directories: damaged files are named, non-checkpoints are recognised, values are never cut."""

import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from sr_cli.models import hub
from sr_cli.cli import app
from sr_cli.models.registry import get_spec
from helpers.paths import PACKAGE_DIR

runner = CliRunner()
MODEL_CHECKSUMS = "srx_checksums.json"  # written beside weights.safetensors
LITE_DIR = PACKAGE_DIR / "weights" / "lite"


def _image(path: Path) -> Path:
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path, format="PNG")
    return path


def _lite_copy(tmp_path: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(LITE_DIR, tmp_path / name))


def _upscale(tmp_path: Path, model: Path):
    _image(tmp_path / "a.png")
    return runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(model), "-o",
                               str(tmp_path / "out.png")])


# ----------------------------------------------------------------------------- model directories


@pytest.mark.parametrize("content, kind", [("[1, 2]", "an array"), ('"lite"', "a string"), ("null", "null")])
def test_model_json_that_is_not_an_object_is_one_line(content, kind, tmp_path):
    model = _lite_copy(tmp_path)
    (model / "srx_model.json").write_text(content)
    result = _upscale(tmp_path, model)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {model}/srx_model.json: expected a JSON object, got {kind}\n"


@pytest.mark.parametrize("change, message", [
    (lambda d: d.__setitem__("checkpoint", [1]), "'checkpoint' must be an object, got an array"),
    (lambda d: d["checkpoint"].__setitem__("net", [48, 96]), "'checkpoint.net' must be an object, got an array"),
    (lambda d: d["checkpoint"]["net"].__setitem__("bogus", 1),
     "the network settings do not fit the lite network (LiteUNet.__init__() got an unexpected keyword argument"),
    (lambda d: d["checkpoint"].__setitem__("unet_adapters", "x"), "malformed 'checkpoint' adapters"),
    (lambda d: d.__setitem__("defaults", [1]), "[model.defaults]: expected a table, got list"),
])
def test_malformed_model_json_values_are_one_line(change, message, tmp_path):
    model = _lite_copy(tmp_path)
    doc = json.loads((model / "srx_model.json").read_text())
    change(doc)
    (model / "srx_model.json").write_text(json.dumps(doc))
    result = _upscale(tmp_path, model)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {model}/srx_model.json: {message}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_model_directory_without_weights_names_the_file(tmp_path):
    model = _lite_copy(tmp_path)
    (model / "weights.safetensors").unlink()
    result = _upscale(tmp_path, model)
    assert result.exit_code == 2, result.output
    assert f"{model}/weights.safetensors: missing" in result.stderr
    assert "Error(s) in loading state_dict" not in result.output


def test_weights_that_do_not_fit_the_network_name_the_file_and_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _lite_copy(tmp_path)
    tensors = load_file(model / "weights.safetensors")
    dropped = min(tensors)
    del tensors[dropped]
    save_file(tensors, model / "weights.safetensors")
    (model / MODEL_CHECKSUMS).unlink()  # replaced on purpose: no recorded checksum to contradict it
    result = _upscale(tmp_path, model)
    assert result.exit_code == 2, result.output
    assert (f"error: {model}/weights.safetensors: the weights do not fit the lite network "
            f"(missing {dropped.removeprefix('net.')})") in result.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_verify_names_a_damaged_model_directory_file(damage, tmp_path):
    model = _lite_copy(tmp_path)
    weights = model / "weights.safetensors"
    assert runner.invoke(app, ["models", "verify", str(model)]).exit_code == 0
    if damage == "truncate":
        os.truncate(weights, weights.stat().st_size - 4096)
    else:  # same size, different bytes: only the hash tells
        with open(weights, "r+b") as f:
            f.seek(-64, os.SEEK_END)
            f.write(b"\0" * 64)
    result = runner.invoke(app, ["models", "verify", str(model)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {weights}: damaged: ")
    if damage == "truncate":
        assert _upscale(tmp_path, model).stderr.startswith(f"error: {weights}: damaged: ")


def test_embedded_lite_ships_its_checksums():
    from sr_cli.models.checkpoints import check_model_files

    check_model_files(LITE_DIR, full=True)
    assert runner.invoke(app, ["models", "verify", "lite"]).exit_code == 0


def test_verify_checks_the_converted_copy_and_load_repairs_it(hf_home, osediff_pkl):
    from sr_cli.models.loading import converted_copy, load_converted_checkpoint

    spec = get_spec("osediff")
    hub.import_weights(spec, osediff_pkl)
    first = load_converted_checkpoint(spec, download=False)  # converts into the cache
    converted = converted_copy(spec)
    assert converted is not None and (converted / MODEL_CHECKSUMS).is_file()
    result = runner.invoke(app, ["models", "verify", "osediff"])
    assert result.exit_code == 0 and f"converted copy {converted} OK" in result.stderr, result.output

    weights = converted / "weights.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)  # e.g. a disk that filled up during the conversion
    result = runner.invoke(app, ["models", "verify", "osediff"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {weights}: damaged: ")
    assert f"delete {converted} and srx converts it again on next use" in result.stderr
    again = load_converted_checkpoint(spec, download=False)  # loading converts the verified download again
    assert sorted(again.tensors) == sorted(first.tensors)
    assert all((again.tensors[k] == first.tensors[k]).all() for k in first.tensors)
    assert runner.invoke(app, ["models", "verify", "osediff"]).exit_code == 0


# ----------------------------------------------------------------------------- srx models import


def _not_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    page = tmp_path / "page.pkl"
    page.write_text("<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>")
    png = _image(tmp_path / "png.pkl")
    Image.open(png).save(tmp_path / "jpeg.pkl", format="JPEG")
    text = tmp_path / "text.pkl"
    text.write_text("Not Found\n")
    noise = tmp_path / "noise.pkl"
    noise.write_bytes(bytes(range(7, 256)) * 8)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    code = tmp_path / "code.pkl"
    code.write_bytes(pickle.dumps({"state_dict_unet": Path("x")}, protocol=2))  # a pickle that builds an object
    return {"html": (page, "this is an HTML page, not {want} (Google Drive"),
            "png": (png, "this is a PNG image, not {want}"), "jpeg": (tmp_path / "jpeg.pkl", "this is a JPEG image"),
            "text": (text, "this is a text file, not {want}"), "noise": (noise, "not {want} (neither torch's zip"),
            "empty": (empty, "the file is empty (0 bytes), not {want}"),
            "code": (code, "refused to load: it holds more than tensors and plain containers")}


@pytest.mark.parametrize("model, want", [("hero-sr", "hero_sr_model.pkl"), ("sinsr", "SinSR_v1.pth"),
                                         ("osediff", "osediff.pkl")])
def test_import_of_a_file_that_is_not_a_checkpoint_says_what_it_is(model, want, hf_home, tmp_path):
    for kind, (path, message) in _not_checkpoints(tmp_path).items():
        result = runner.invoke(app, ["models", "import", model, str(path)])
        assert result.exit_code == 2, (kind, result.output)
        assert result.stderr.startswith(f"error: {path}: " + message.format(want=want)), (kind, result.stderr)
        assert result.stderr.count("\n") == 1
        assert "weights_only" not in result.output and "arbitrary code" not in result.output
        assert not hub.manual_path(get_spec(model)).exists()  # nothing imported


# ----------------------------------------------------------------------------- srx models info / list


def _record_long_values(hf_home):
    digest = "ab" * 32
    hub.record_hash("osediff/osediff.pkl", digest)
    return digest, get_spec("osediff").weights.url


def test_info_in_a_pipe_prints_whole_key_value_lines(hf_home):
    digest, url = _record_long_values(hf_home)
    result = runner.invoke(app, ["models", "info", "osediff"])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"sha256: {digest}" in lines
    assert f"weights: osediff.pkl (url): {url}" in lines
    assert f"weights path: {hub.manual_path(get_spec('osediff'))}" in lines
    assert "license: Apache-2.0" in lines and "…" not in result.stdout


def test_list_in_a_pipe_prints_whole_lines(hf_home):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["name", "family", "base model", "weights", "base", "license"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["hero-sr"][5] == get_spec("hero-sr").license
    assert by_name["osediff"][2] == "stabilityai/stable-diffusion-2-1-base@main"


@pytest.mark.parametrize("command", [["models", "info", "osediff"], ["models", "list"]])
def test_on_a_narrow_terminal_long_values_wrap_instead_of_being_cut(command, hf_home, monkeypatch):
    import sr_cli.cli.models as models_cli

    digest, url = _record_long_values(hf_home)
    screen = io.StringIO()
    monkeypatch.setattr(models_cli, "out_console",
                        Console(file=screen, width=80, force_terminal=True, color_system=None, highlight=False))
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert "…" not in shown and max(len(line) for line in shown.splitlines()) <= 80
    if command[1] == "info":
        joined = re.sub(r"[\s│]+", "", shown)  # the table's borders and line breaks taken out
        for value in (digest, url, str(hub.manual_path(get_spec("osediff")))):
            assert value in joined, value
    else:
        cells = {}  # the table's cells put back together: model name -> its column texts
        for line in shown.splitlines():
            if line.startswith("│"):
                parts = [p.strip() for p in line.split("│")[1:-1]]
                if parts[0]:
                    name = parts[0]
                cells.setdefault(name, [""] * len(parts))
                cells[name] = [a + b for a, b in zip(cells[name], parts)]
        for name in ("hero-sr", "sinsr", "resshift", "osediff"):
            spec = get_spec(name)
            assert re.sub(r"\s+", "", cells[name][5]) == re.sub(r"\s+", "", spec.license)
            assert cells[name][2] == (spec.base.describe() if spec.base else "-")


@pytest.mark.parametrize("name, shown", [("osediff", True), ("s3diff", True), ("lite", False),
                                         ("realesrgan-x4plus", False), ("adcsr", False), ("sinsr", False)])
def test_info_shows_the_text_condition_only_for_text_conditioned_models(hf_home, name, shown):
    result = runner.invoke(app, ["models", "info", name])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("text condition:") for line in result.stdout.splitlines()) is shown
