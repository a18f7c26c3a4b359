"""A tqdm progress bar on stderr, as the `progress(done, total)` callback the library takes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bar(desc: str, quiet: bool) -> Iterator:
    """Yield a `progress(done, total[, stage])` callback drawing a bar with images/s (None when
    quiet); a new `stage` (e.g. "decode", then "train") starts a new bar named after it."""
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
            bar = tqdm(total=total, desc=name, unit="img", leave=False, dynamic_ncols=True, mininterval=0.5)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
