"""The one place where library errors become `Error: <message>` on stderr and exit code 1."""

from __future__ import annotations

import functools
import sys

import typer

#: Library keywords whose CLI flag is not the keyword with `_` -> `-` (and not an option of the
#: command itself): `n_workers` is `--workers`, `n_calibration` is `--calibration-images`, ...
FLAGS = {
    "n_workers": "--workers",
    "n_threads": "--threads",
    "n_calibration": "--calibration-images",
    "n_check": "--check-images",
    "augment_seed": "--augment-seed",
    "all_": "--all",
}


def _current_context():
    """The running command's click context (Typer may bundle its own copy of click)."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            globals_ = __import__(module, fromlist=["get_current_context"])
        except ImportError:
            continue
        ctx = globals_.get_current_context(silent=True)
        if ctx is not None:
            return ctx
    return None


def flag_of(param: str) -> str:
    """The command-line name of library keyword `param` in the running command: its flag
    (`--batch-size`), or the metavar of a positional argument (`NAME`)."""
    ctx = _current_context()
    if ctx is not None:
        for p in ctx.command.params:
            if p.name in (param, param.rstrip("_")):
                if p.param_type_name == "argument":
                    return p.name.upper()
                opts = [o for o in p.opts if o.startswith("--")] or p.opts
                return opts[0]
    return FLAGS.get(param, "--" + param.rstrip("_").replace("_", "-"))


def message_of(err) -> str:
    """The one-line message of a FeatstoreError, with an option's flag in place of its keyword."""
    from featstore.errors import InvalidOptionError

    if isinstance(err, InvalidOptionError):
        return f"{flag_of(err.param)}: {err.message}"
    return str(err)


def guarded(fn):
    """Wrap a command so a FeatstoreError prints one line and exits 1 (anything else is a bug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from featstore.errors import FeatstoreError

        try:
            return fn(*args, **kwargs)
        except FeatstoreError as err:
            typer.echo(f"Error: {message_of(err)}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted: the store is intact; run the same command again to resume.", err=True)
            sys.exit(130)

    return wrapper
