"""The one place where library errors become `Error: <message>` on stderr and exit code 1."""

from __future__ import annotations

import functools
import sys

import typer


def guarded(fn):
    """Wrap a command so a FeatstoreError prints one line and exits 1 (anything else is a bug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from featstore.errors import FeatstoreError

        try:
            return fn(*args, **kwargs)
        except FeatstoreError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted: the store is intact; run the same command again to resume.", err=True)
            sys.exit(130)

    return wrapper
