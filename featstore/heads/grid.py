"""The grid of a sweep: each head kind mapped to its settings, read as scikit-learn's
`ParameterGrid` reads them (list values are alternatives; a list of mappings adds up).

A setting's keys are the fields of the kind's parameters; `DEFAULT_GRID` has 22 settings.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from featstore.deps import available, require
from featstore.errors import InvalidOptionError
from featstore.heads.params import HeadParams
from featstore.heads.registry import available_head_kinds, feature_kinds, get_head_kind
from featstore.heads.trials import Setting

#: The grid `featstore fit-head sweep` fits when no --grid is given: 22 settings.
DEFAULT_GRID: dict = {
    "logistic": {"C": [0.01, 0.1, 1.0], "scale": ["standard", "l2"]},
    "svm": [{"kernel": "rbf", "C": [1.0, 10.0]}, {"kernel": "linear", "C": [0.0001, 0.001]}],
    "knn": {"k": [1, 5, 10, 20], "scale": ["none", "standard"]},
    "dense": {"hidden": [[256], [512]], "dropout": [0.2, 0.5]},
}
#: The most settings one sweep fits.
MAX_SETTINGS = 2000


def read_grid(path: str | Path) -> dict:
    """Read a grid file: YAML for `.yaml`/`.yml` (needs PyYAML), else JSON; InvalidOptionError
    (param `grid`) for a missing file or a document that is not a grid."""
    path = Path(path).expanduser()
    if not path.exists() or path.is_dir():  # a pipe (`--grid <(...)`) reads like a file
        raise InvalidOptionError("grid", f"no grid file {path}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise InvalidOptionError("grid", f"cannot read {path}: {err.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        if not available("yaml"):
            raise InvalidOptionError(
                "grid",
                f"{path} is YAML, and PyYAML is not installed: pip install pyyaml, or write the grid as JSON",
            )
        yaml = require("yaml", package="pyyaml")
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InvalidOptionError("grid", f"{path} is not valid YAML: {_one_line(err)}") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise InvalidOptionError("grid", f"{path} is not valid JSON: {err}") from None


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _alternatives(value) -> list:
    """The alternatives a grid value lists: a list's items, else the value alone."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _entries(kind: str, spec, source: str) -> list[dict]:
    if isinstance(spec, dict):
        return [spec]
    if isinstance(spec, list) and spec and all(isinstance(e, dict) for e in spec):
        return spec
    raise InvalidOptionError(
        "grid", f"{source}: {kind} must map to settings (a mapping, or a list of mappings), not {spec!r}"
    )


def _settings_of(kind: str, spec, base: HeadParams, source: str) -> list[Setting]:
    """Every setting grid entry `spec` of `kind` lists, each `base` with the grid's values."""
    names = base.names()
    out = []
    for entry in _entries(kind, spec, source):
        unknown = sorted(set(entry) - set(names))
        if unknown:
            raise InvalidOptionError(
                "grid", f"{source}: {kind} has no setting {unknown[0]!r}; {kind} takes {', '.join(names)}"
            )
        keys = list(entry)
        for combo in itertools.product(*(_alternatives(entry[k]) for k in keys)):
            shown = dict(zip(keys, combo, strict=True))
            try:
                made = replace(base, **shown).check()
            except (InvalidOptionError, TypeError) as err:
                raise InvalidOptionError("grid", f"{source}: {kind} {shown}: {err}") from None
            out.append(Setting(made, shown))
    return out


def expand_grid(grid: dict | str | Path | None, base: Sequence[HeadParams] = ()) -> list[Setting]:
    """The settings of `grid` (kind -> settings, a JSON or YAML file, or None: `DEFAULT_GRID`), in
    the grid's order, each once; each starts from the parameters of its kind in `base` (or the
    kind's defaults) with the grid's values replacing them. InvalidOptionError (param `grid`) for
    an unreadable file, an unknown kind or one not fitted on features, a setting the kind does not
    take, a value out of range, no setting, or more than `MAX_SETTINGS`."""
    source = "the grid" if grid is None or isinstance(grid, dict) else str(grid)
    data = DEFAULT_GRID if grid is None else grid if isinstance(grid, dict) else read_grid(grid)
    if not isinstance(data, dict) or not data:
        raise InvalidOptionError(
            "grid", f'{source} must map head kinds to settings, like {{"knn": {{"k": [5, 10]}}}}'
        )
    valid = [k.name for k in feature_kinds()]
    start = {p.kind: p for p in base}
    settings, seen = [], set()
    for kind, spec in data.items():
        if kind not in valid:
            made = kind in available_head_kinds()
            raise InvalidOptionError(
                "grid",
                f"{source}: "
                + (
                    f"{kind} heads are made from saved heads, not fitted; --ensemble K makes a greedy ensemble of the settings"
                    if made
                    else f"unknown head {kind!r}"
                )
                + f"; a grid holds {', '.join(valid)}",
            )
        for s in _settings_of(kind, spec, start.get(kind) or get_head_kind(kind).params(), source):
            key = json.dumps(s.params.to_dict(), sort_keys=True)
            if key not in seen:
                seen.add(key)
                settings.append(s)
    if len(settings) > MAX_SETTINGS:
        raise InvalidOptionError(
            "grid", f"{source} has {len(settings)} settings; a sweep fits at most {MAX_SETTINGS}"
        )
    return settings
