"""The docs stay true: every command has help with an example and is in docs/cli.md, every
backbone is documented, the generated files are fresh, and the README's examples run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

import pytest
from conftest import REPO
from typer.testing import CliRunner

from featstore.backbones.applications import available_backbones
from featstore_cli.app import app
from featstore_cli.reference import command_paths, render_backbones, render_reference

runner = CliRunner()


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    out = runner.invoke(app, [*path, "--help"])
    assert out.exit_code == 0
    assert re.search(r"Example: featstore " + re.escape(path[0]), out.stdout), out.stdout


def test_cli_reference_is_fresh():
    assert (REPO / "docs" / "cli.md").read_text() == render_reference() + "\n", (
        "docs/cli.md is stale: python -m featstore_cli.reference > docs/cli.md"
    )


def test_backbone_table_is_fresh_and_complete():
    text = (REPO / "docs" / "backbones.md").read_text()
    assert text == render_backbones() + "\n", (
        "docs/backbones.md is stale: python -m featstore_cli.reference backbones > docs/backbones.md"
    )
    for name in available_backbones():
        assert f"| {name} |" in text


def test_readme_starts_with_the_two_setup_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert lines[3] == 'pip install -e ".[dev]" && featstore demo'
    assert lines[4] == "python -m pytest -q"
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and 'pip install --quiet -e ".[dev]"' in ci


def readme_examples() -> list[str]:
    """The commands of the README's "Commands" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("featstore ")]


def test_readme_lists_every_command():
    examples = " ".join(readme_examples())
    for path in command_paths():
        assert "featstore " + " ".join(path) in examples


def doc_command_lines() -> list[tuple[str, str]]:
    """(file, line) of every `featstore ...` line in a code block of the README and docs/ (not
    the generated cli.md)."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        if path.name == "cli.md":
            continue
        fenced = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced
            elif fenced and line.startswith("featstore "):
                out.append((path.name, line))
    return out


def test_every_example_in_the_docs_names_a_command_and_its_flags():
    from typer.main import get_command

    root = get_command(app)
    lines = doc_command_lines()
    assert len(lines) > 60
    for name, line in lines:
        args = shlex.split(line, comments=True)[1:]
        cmd = root
        while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
            cmd = cmd.commands[args.pop(0)]
        runs_alone = not hasattr(cmd, "commands") or cmd.invoke_without_command
        assert runs_alone, f"{name}: no such command: {line}"
        flags = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for arg in args:
            if arg.startswith("-") and not arg.lstrip("-").replace(".", "").isdigit():
                assert arg.split("=")[0] in flags, f"{name}: {arg} is not an option of: {line}"


def test_help_answers_fast():
    t0 = time.perf_counter()
    out = subprocess.run(["featstore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and time.perf_counter() - t0 < 3.0


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "FEATSTORE_HOME": ""}
    env.pop("FEATSTORE_HOME")
    outputs = []
    for line in readme_examples():
        out = subprocess.run(
            shlex.split(line, comments=True),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "# needs the" in line:  # the tests are offline: these lines fail, in one clear line
            assert out.returncode == 1 and out.stderr.startswith("Error: "), f"{line}\n{out.stderr}"
            assert len(out.stderr.splitlines()) == 1, out.stderr
            continue
        assert out.returncode == 0, f"{line}\n{out.stdout}\n{out.stderr}"
        outputs.append(out.stdout)
    demo = outputs[0]
    assert demo.startswith(
        "weights: none - random init (--weights none), because ImageNet weights are not usable: "
        "ImageNet weights for mobilenet_v2 are not cached"
    )  # the tests run with FEATSTORE_OFFLINE=1
    assert "digits@mobilenet_v2-96px-random: 1797 images, 1280 features (float32), 10 classes" in demo
    assert "best validation accuracy first:" in demo and (tmp_path / "report.html").is_file()
    import json

    rerun = json.loads(outputs[5])
    assert (rerun["n_computed"], rerun["n_reused"]) == (0, 1797)


def python_examples() -> list[str]:
    """The ```python blocks of docs/python.md, in order."""
    text = (REPO / "docs" / "python.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_python_docs_run_as_written(tmp_path, monkeypatch):
    from conftest import make_class_folders

    make_class_folders(tmp_path / "photos", classes=("cat", "dog", "fox"), n_per_class=8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    namespace: dict = {}
    for i, block in enumerate(python_examples()):
        exec(compile(block, f"docs/python.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "report.html").is_file() and (tmp_path / "photos-logistic.onnx").is_file()
