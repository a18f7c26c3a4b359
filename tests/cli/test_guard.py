"""Invalid options name the flag (or argument) the user typed, not the library keyword."""

from __future__ import annotations

from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()


def test_an_invalid_option_names_its_flag(photos, store):
    out = runner.invoke(
        app,
        [
            "extract",
            "-b",
            "vgg16",
            "-d",
            str(photos),
            "--weights",
            "none",
            "--batch-size",
            "0",
            "--store",
            str(store),
        ],
    )
    assert out.exit_code == 1
    assert out.stderr == "Error: --batch-size: must be a whole number of at least 1, or auto; not '0'\n"


def test_an_invalid_argument_names_it_in_capitals(store):
    out = runner.invoke(app, ["store", "rm", "../x", "--yes", "--store", str(store)])
    assert out.exit_code == 1 and out.stderr.startswith("Error: NAME: ")
