"""What a sweep fits, `SweepOptions`: the grid, and how many of its best settings vote in an
ensemble. Pure Python: the CLI reads its defaults from it at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.options import Options


@dataclass(frozen=True)
class SweepOptions(Options):
    """What a sweep fits: `grid` (a grid file, JSON or YAML, or a grid as a dict; None: the
    default grid, see `featstore.heads.grid`) and `ensemble` (K: also save the soft vote of the
    K best settings as a head of kind `ensemble`; 0: none)."""

    grid: str | dict | None = None
    ensemble: int = 0

    def check(self) -> SweepOptions:
        """Raise InvalidOptionError for an ensemble of 1 or a negative or fractional size."""
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 0:
            raise InvalidOptionError("ensemble", f"must be a whole number of heads, not {self.ensemble!r}")
        if self.ensemble == 1:
            raise InvalidOptionError("ensemble", "an ensemble needs at least 2 heads (0: no ensemble)")
        return self
