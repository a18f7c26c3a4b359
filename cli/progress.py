"""A tqdm progress bar on stderr, as the `progress(done, total)` callback the library takes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bar(desc: str, quiet: bool) -> Iterator:
    """Yield a `progress(done, total)` callback drawing a bar with images/s (None when quiet)."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True, mininterval=0.5)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
