"""How long work tells its caller where it is: one `Reporter` (notes and progress) passed down
whole. The library never prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _ignore(*_args, **_kwargs) -> None:
    return None


@dataclass(frozen=True)
class Reporter:
    """Callbacks: `log(line)` per note, `progress(done, total, stage=None)` as work advances (counts
    of images or fits; bytes for stage "download"; a new stage starts a new count)."""

    log: Callable[[str], None] = _ignore
    progress: Callable[..., None] = _ignore


#: The reporter of a call that wants no notes and no progress.
SILENT = Reporter()
