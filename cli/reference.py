"""The generated docs: `python -m featstore_cli.reference > docs/cli.md` and
`python -m featstore_cli.reference backbones > docs/backbones.md`."""

from __future__ import annotations

import typer

from featstore_cli.app import app


def _walk(command, path: list[str]):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, [*path, name])


def command_paths() -> list[list[str]]:
    """Every leaf command, as argument lists such as `["store", "ls"]`."""
    root = typer.main.get_command(app)
    return [p for p, c in _walk(root, []) if p and not getattr(c, "commands", None)]


def render_reference() -> str:
    """Markdown with the `--help` text of every command."""
    from typer.testing import CliRunner

    runner = CliRunner(env={"COLUMNS": "100", "TERM": "dumb"})
    parts = ["# featstore command reference", "", "Generated from `--help`; do not edit by hand.", ""]
    root = typer.main.get_command(app)
    for path, _ in _walk(root, []):
        title = " ".join(["featstore", *path])
        text = runner.invoke(app, [*path, "--help"], prog_name="featstore").stdout.rstrip()
        parts += [f"## {title}", "", "```", text, "```", ""]
    return "\n".join(parts)


def render_backbones() -> str:
    """Markdown table of every registered backbone (figures at the native input size)."""
    from featstore.backbones.applications import load_catalog
    from featstore.backbones.catalog import list_backbones
    from featstore_cli.output import table

    weights = {name: entry["weights"] for name, entry in load_catalog().items()}

    def check(w: dict) -> str:
        return f"{w['hash_algorithm']} {w['hash']}" if w["hash"] else "size (Keras records no hash)"

    rows = [
        {
            "name": b.name,
            "keras": b.keras_name,
            "input_px": b.input_size,
            "n_features": b.n_features,
            "params_m": round(b.n_params / 1e6, 2),
            "gflops": b.gflops,
            "preprocess": b.preprocess,
            "imagenet weights file ($KERAS_HOME/models/)": b.weights_file,
            "weights_mb": b.weights_mb,
            "checked by": check(weights[b.name]),
        }
        for b in list_backbones()
    ]
    lines = table(rows).splitlines()
    md = ["| " + " | ".join(c.strip() for c in _cells(lines[0], lines[1])) + " |"]
    md.append("|" + "|".join("---" for _ in _cells(lines[0], lines[1])) + "|")
    md += ["| " + " | ".join(c.strip() for c in _cells(line, lines[1])) + " |" for line in lines[2:]]
    head = [
        "# Backbones",
        "",
        "Generated from the registry; do not edit by hand. GFLOPs per image count 2 operations per",
        "multiply-add of every convolution and dense layer, at the native input size, average pooling.",
        "`preprocess` is the `preprocess_input` mode folded into the exported graph (`none`: the",
        "network normalises its own input). The weights file, its size and hash are those Keras'",
        "application code names (`featstore weights ls` shows their state on this machine).",
        "",
    ]
    return "\n".join(head + md)


def _cells(line: str, rule: str) -> list[str]:
    out, start = [], 0
    for dashes in rule.split("  "):
        end = start + len(dashes)
        out.append(line[start:end])
        start = end + 2
    return out


if __name__ == "__main__":
    import sys

    print(render_backbones() if sys.argv[1:] == ["backbones"] else render_reference())
