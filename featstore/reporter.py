"""How long work tells its caller where it is: one `Reporter` passed down whole.

The library never prints. A command's notes go to `reporter.log(line)` and its progress to
`reporter.progress(done, total, stage)`; the CLI gives a reporter that draws bars and writes
notes on stderr, a Python caller one of its own or none (`SILENT`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _ignore(*_args, **_kwargs) -> None:
    return None


@dataclass(frozen=True)
class Reporter:
    """Callbacks for notes and progress.

    `log(line)` gets one line of text per note. `progress(done, total, stage=None)` is called
    as work advances: counts of images (or fits) done of `total`; the stage "download" counts
    bytes; a new stage (e.g. "decode", then "train") starts a new count.
    """

    log: Callable[[str], None] = _ignore
    progress: Callable[..., None] = _ignore

    @property
    def silent(self) -> bool:
        """True when neither callback does anything."""
        return self.log is _ignore and self.progress is _ignore


#: The reporter of a call that wants no notes and no progress.
SILENT = Reporter()
