"""A tqdm progress bar on stderr, as the `progress(done, total)` callback the library takes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bar(desc: str, quiet: bool) -> Iterator:
    """Yield a `progress(done, total[, stage])` callback drawing a bar with images/s (None when
    quiet); a new `stage` (e.g. "decode", then "train") starts a new bar named after it. The
    "download" stage counts bytes (size and speed in MB)."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = None
    current = None

    def update(done: int, total: int, stage: str | None = None) -> None:
        nonlocal bar, current
        if bar is not None and stage != current:
            bar.close()
            bar = None
        if bar is None:
            current = stage
            name = f"{desc} {stage}" if stage else desc
            units = (
                {"unit": "B", "unit_scale": True, "unit_divisor": 1000}
                if stage == "download"
                else {"unit": "img"}
            )
            bar = tqdm(total=total, desc=name, leave=False, dynamic_ncols=True, mininterval=0.5, **units)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
