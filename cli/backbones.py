"""`featstore backbones`: the registry as a table."""

from __future__ import annotations

from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Json, Nl
from featstore_cli.output import emit, pick_format

COLUMNS = ["name", "input_size", "n_features", "params_m", "gflops", "preprocess", "weights_mb", "imagenet"]


@guarded
def backbones(json_: Json = False, nl: Nl = False, csv_: Csv = False) -> None:
    """List every backbone: input size, feature dimension, parameters (millions), GFLOPs per
    image (computed from the network), the size of its ImageNet weight file (MB) and its state in
    Keras' cache (official, trusted, not official or missing; see `featstore weights`).

    Example: featstore backbones --json
    """
    from featstore.backbones.catalog import list_backbones

    fmt = pick_format(json_, nl, csv_)
    rows = [b.to_dict() for b in list_backbones()]
    if fmt == "table":
        for r in rows:
            r["params_m"] = None if r["n_params"] is None else round(r["n_params"] / 1e6, 2)
        emit(rows, fmt, COLUMNS)
    else:
        emit(rows, fmt)
