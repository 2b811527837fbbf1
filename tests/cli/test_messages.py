"""What users read: names printed exactly as they are, and every command a message suggests exists and runs."""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import typer.main
from PIL import Image
from typer.testing import CliRunner

from sr_cli.models import hub
from sr_cli.cli import app
from sr_cli.errors import WeightsIntegrityError, WeightsMissingError
from sr_cli.models.registry import get_spec, registry
from helpers.paths import PACKAGE_DIR

runner = CliRunner()
LITE_DIR = PACKAGE_DIR / "weights" / "lite"


def _image(path: Path) -> Path:
    Image.new("RGB", (8, 8), (90, 120, 30)).save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------- names with brackets


@pytest.mark.parametrize("name", ["x[/b]", "holiday[draft]", "a[red]b[/red]"])
def test_unknown_model_name_with_brackets_is_printed_verbatim(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "a.png")
    result = runner.invoke(app, ["upscale", "a.png", "--model", name])
    assert result.exit_code == 2, result.output
    assert f"error: unknown model '{name}'" in result.stderr
    assert "MarkupError" not in result.output


def test_file_names_with_brackets_are_printed_verbatim(tmp_path, monkeypatch):
    """`x[/b].png` (a file b].png in a folder x[) would be a rich closing tag; holiday[draft] a style."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x[").mkdir()
    (tmp_path / "x[" / "b].png").write_bytes(b"junk")
    (tmp_path / "holiday[draft].png").write_bytes(b"junk")
    _image(tmp_path / "ok[red].png")
    result = runner.invoke(app, ["upscale", "x[/b].png", "holiday[draft].png", "ok[red].png", "-o", "out"])
    assert result.exit_code == 1, result.output
    assert "error: x[/b].png: not an image" in result.stderr
    assert "error: holiday[draft].png: not an image" in result.stderr
    assert "ok[red].png" in result.stderr and (tmp_path / "out" / "ok[red]_srx.png").is_file()
    assert "MarkupError" not in result.output


@pytest.mark.parametrize("folder", ["run[b]", "holiday[draft]"])
def test_manifest_error_of_a_model_directory_keeps_brackets(folder, tmp_path, monkeypatch):
    """A malformed srx_model.json: the message names the folder and the [table] exactly."""
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "a.png")
    model = tmp_path / folder
    shutil.copytree(LITE_DIR, model)
    doc = (model / "srx_model.json").read_text().replace('"family": "lite"', '"family": "nope"')
    (model / "srx_model.json").write_text(doc)
    result = runner.invoke(app, ["upscale", "a.png", "--model", folder])
    assert result.exit_code == 2, result.output
    assert f"{folder}/srx_model.json: [{folder}] has unknown family 'nope'" in result.stderr


def test_missing_pyiqa_hint_keeps_the_extra(tmp_path, monkeypatch):
    """`pip install 'srx[eval]'` must be printed with its [eval]: rich markup would eat it."""
    for sub in ("HR", "LR"):
        (tmp_path / "set" / sub).mkdir(parents=True)
        _image(tmp_path / "set" / sub / "im0.png")
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # pyiqa not installed
    result = runner.invoke(app, ["evaluate", "--dataset", str(tmp_path / "set"), "--outputs",
                                 str(tmp_path / "set" / "HR"), "--metrics", "psnr"])
    assert "pip install 'srx[eval]'" in result.stderr, result.output


# ----------------------------------------------------------------------------- suggested commands


def _leaf(args: list[str]):
    """The click command an `srx ...` line runs, and its parsed parameters (raises if it does not parse)."""
    cmd = typer.main.get_command(app)
    name = "srx"
    while hasattr(cmd, "get_command"):  # a group (typer ships its own click: no isinstance on click's classes)
        assert args, f"incomplete command: srx {name}"
        name, args = args[0], args[1:]
        cmd = cmd.get_command(typer.Context(cmd), name)
        assert cmd is not None, f"no such command: {name}"
    ctx = cmd.make_context(name, list(args))  # a usage error if the line does not parse
    return name, ctx.params


def suggested_commands(message: str) -> list[list[str]]:
    return [shlex.split(c)[1:] for c in re.findall(r"`(srx [^`]+)`", message)]


def check_suggestions(message: str, cwd: Path) -> int:
    """Every `srx ...` a message names parses with the real CLI and names a registry model; files it names exist
    (as the user's downloads would)."""
    commands = suggested_commands(message)
    for args in commands:
        if args[:2] == ["models", "import"]:
            _image(cwd / args[3])  # the file the user downloaded (any content: only parsing is checked)
        _command, params = _leaf(args)
        if "name" in params:
            assert params["name"] in registry(), message
    return len(commands)


def _messages_for(spec_name: str, hf_home: Path) -> list[str]:
    """The messages srx gives when each file of a registry model is missing, and when one is altered."""
    spec = get_spec(spec_name)
    out = []
    specs = [spec] + ([hub.autoencoder_spec(spec)] if spec.autoencoder is not None else [])
    for s in specs:
        if s.weights is None or s.weights.kind == "embedded":
            continue
        with pytest.raises(WeightsMissingError) as e:
            hub.resolve_weights(s, download=False)
        out.append(str(e.value))
        stored = hub.manual_path(s)  # a copy whose hash differs from the recorded one
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(b"altered")
        hub.record_hash(hub._lock_key(s), "0" * 64)
        with pytest.raises(WeightsIntegrityError) as e:
            hub.resolve_weights(s, download=False)
        out.append(str(e.value))
        stored.unlink()
    if spec.base is not None:
        with pytest.raises(WeightsMissingError) as e:
            hub.resolve_base(spec.base, spec.name, download=False)
        out.append(str(e.value))
    return out


@pytest.mark.parametrize("model", sorted(registry()))
def test_every_suggested_command_exists_and_parses(model, hf_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    messages = _messages_for(model, hf_home)
    n = sum(check_suggestions(m, tmp_path) for m in messages)
    if get_spec(model).weights.kind != "embedded":
        assert n > 0, messages  # each missing file comes with a remedy
    for m in messages:  # neither the internal name of a shared file nor an option most commands lack
        assert not any("shared-" in " ".join(c) for c in suggested_commands(m)) and "--weights" not in m, m


def test_manifest_instructions_suggest_commands_that_exist(tmp_path, monkeypatch):
    """The `instructions` of every file in the registry (shown when a manual download is missing)."""
    from dataclasses import fields

    from sr_cli.models.registry import WeightsSource

    monkeypatch.chdir(tmp_path)
    n = 0
    for spec in registry().values():
        for f in fields(spec):
            src = getattr(spec, f.name)
            if isinstance(src, WeightsSource) and src.instructions:
                n += check_suggestions(src.instructions, tmp_path)
    assert n >= 2  # hero-sr and hf-diff at least


def test_base_model_of_a_training_run_suggests_no_made_up_model(hf_home):
    from sr_cli.models.registry import BaseModel

    with pytest.raises(WeightsMissingError) as e:
        hub.resolve_base(BaseModel(repo="stabilityai/sd-turbo"), "train:osediff", download=False)
    assert "srx models download" not in str(e.value) and "--base" in str(e.value)


def test_suggested_autoencoder_import_works(hf_home, tmp_path, monkeypatch):
    """Following the message for a missing autoencoder offline puts the file where srx looks for it."""
    from helpers.tiny import make_resshift_files

    _denoiser, autoencoder = make_resshift_files(tmp_path / "files")
    ae_spec = hub.autoencoder_spec(get_spec("sinsr"))
    with pytest.raises(WeightsMissingError) as e:
        hub.resolve_weights(ae_spec, download=False)
    (command,) = [c for c in suggested_commands(str(e.value)) if c[:2] == ["models", "import"]]
    assert command == ["models", "import", "sinsr", "autoencoder_vq_f4.pth", "--autoencoder"]
    command[3] = str(autoencoder)
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert hub.resolve_weights(ae_spec, download=False).read_bytes() == autoencoder.read_bytes()
    # The denoiser is no autoencoder: refused, naming the option it needs instead.
    result = runner.invoke(app, ["models", "import", "sinsr", str(autoencoder)])
    assert result.exit_code == 2 and "this is the VQ autoencoder, not a ResShift denoiser (import it with --autoencoder)" in result.stderr


def test_check_suggestions_catches_a_made_up_command(tmp_path):
    """The checker itself fails on the remedies srx used to give."""
    with pytest.raises(AssertionError):
        check_suggestions("run `srx models download shared-92c8ccece6d7` with network access", tmp_path)
    with pytest.raises(Exception, match="No such option: --weights"):
        check_suggestions("run `srx models verify sinsr --weights FILE`", tmp_path)
    with pytest.raises(AssertionError, match="no such command"):
        check_suggestions("run `srx models fetch sinsr`", tmp_path)



def _leaf_commands():
    root = typer.main.get_command(app)
    stack = [([], root)]
    while stack:
        path, cmd = stack.pop()
        if hasattr(cmd, "get_command"):
            for name in cmd.list_commands(typer.Context(cmd)):
                stack.append((path + [name], cmd.get_command(typer.Context(cmd), name)))
        else:
            yield path, cmd


def test_help_texts_keep_their_brackets():
    """Option help is rendered as rich markup: a text like "org/name[@revision]" must keep its brackets."""
    checked = 0
    for path, cmd in _leaf_commands():
        texts = [p.help for p in cmd.params if getattr(p, "help", None) and "[" in p.help]
        if not texts:
            continue
        result = runner.invoke(app, path + ["--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        shown = " ".join(result.output.replace("│", " ").split())
        for text in texts:
            assert " ".join(text.replace("\\[", "[").split()) in shown, (path, text)
            checked += 1
    assert checked >= 2  # --base of upscale/evaluate and train at least
