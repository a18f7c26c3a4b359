"""The CLI's reporter: notes on stderr, and a tqdm progress bar with its rate."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from featstore.reporter import Reporter


def note(message: str, quiet: bool = False) -> None:
    """Print a note to stderr unless quiet, above any progress bar (not through it)."""
    if not quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


@contextlib.contextmanager
def reporting(desc: str, quiet: bool, bar: bool = True, unit: str = "img") -> Iterator[Reporter]:
    """Yield the reporter of a command: its notes on stderr unless `quiet`, and with `bar` (and
    not quiet) a progress bar counting `unit`s; a new stage (e.g. "decode", then "train")
    starts a new bar named after it, and the "download" stage counts bytes."""
    if quiet or not bar:
        yield Reporter(log=lambda m: note(m, quiet))
        return
    from tqdm import tqdm

    shown = None
    current = None

    def update(done: int, total: int, stage: str | None = None) -> None:
        nonlocal shown, current
        if shown is not None and stage != current:
            shown.close()
            shown = None
        if shown is None:
            current = stage
            name = f"{desc} {stage}" if stage else desc
            units = (
                {"unit": "B", "unit_scale": True, "unit_divisor": 1000}
                if stage == "download"
                else {"unit": unit}
            )
            shown = tqdm(total=total, desc=name, leave=False, dynamic_ncols=True, mininterval=0.5, **units)
        shown.update(done - shown.n)

    try:
        yield Reporter(log=lambda m: note(m, quiet), progress=update)
    finally:
        if shown is not None:
            shown.close()
