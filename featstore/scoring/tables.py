"""The predictions table: one row per image (`path`, `prediction`, `probability`, `top_k`,
`digest`, `error`), written whole to a temporary file and renamed.

`top_k` is a list of structs in `.parquet`, a list of objects in `.jsonl`, and columns
`top1_class, top1_probability, ...` in `.csv`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError, MissingDependencyError, OutputExistsError
from featstore.heads.thresholds import UNKNOWN

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = ("path", "prediction", "probability", "top_k", "digest", "error")


def output_format(path: Path) -> str:
    """Return "parquet", "csv" or "jsonl" from `path`'s extension; FeatstoreError for another."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FeatstoreError(
            f"output {path} must end in .parquet, .csv or .jsonl (the extension chooses the format)"
        )
    return fmt


def check_output(output: str | os.PathLike, overwrite: bool, suffixes: tuple[str, ...] | None = None) -> Path:
    """Return `output` as an absolute path that may be written; OutputExistsError when it exists
    without `overwrite`, FeatstoreError for a wrong extension or an unwritable folder."""
    path = Path(output).expanduser().absolute()
    if path.is_dir():
        raise FeatstoreError(f"output {path} is a folder; give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise FeatstoreError(
            f"output {path} must end in {', '.join(suffixes)} (the extension chooses the format)"
        )
    refuse_existing(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FeatstoreError(f"cannot create the output folder {path.parent}: {err.strerror}") from err
    from featstore.files import new_temp

    try:
        new_temp(path.parent, path.name).unlink()
    except OSError as err:
        raise FeatstoreError(f"cannot write to the output folder {path.parent}: {err.strerror}") from err
    return path


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError when `path` exists and `overwrite` is False."""
    if not overwrite and path.exists():
        raise OutputExistsError(f"output {path} exists already; pass --overwrite to replace it")


@dataclass
class PredictionBatch:
    """Rows of the table: paths, digests and errors (n,), probabilities (n, n_classes) float64 (NaN
    for an error row)."""

    paths: list[str]
    digests: list[str | None]
    errors: list[str | None]
    proba: np.ndarray


def top_classes(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) and probabilities (n, k) of each row's k likeliest classes (ties: lower index)."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(proba, order, axis=1)


def _records(batch: PredictionBatch, class_names: list[str], k: int, reject_below: float | None = None):
    idx, top = top_classes(np.nan_to_num(batch.proba, nan=-1.0), k)
    idx, top = idx.tolist(), top.tolist()
    for i, path in enumerate(batch.paths):
        error = batch.errors[i]
        if error:
            yield path, None, None, None, batch.digests[i], error
        else:
            pairs = [(class_names[c], p) for c, p in zip(idx[i], top[i], strict=True)]
            unsure = reject_below is not None and pairs[0][1] < reject_below
            yield path, UNKNOWN if unsure else pairs[0][0], pairs[0][1], pairs, batch.digests[i], None


class PredictionWriter:
    """Writes the table to a temporary file beside `path`, renamed by `commit`; leaving the
    context without `commit` removes it."""

    def __init__(self, path: Path, class_names: list[str], top_k: int, reject_below: float | None = None):
        from featstore.files import new_temp

        self.path = path
        self.reject_below = reject_below
        self.n_unknown = 0
        self.format = output_format(path)
        self.class_names = list(class_names)
        self.k = max(1, min(top_k, len(class_names)))
        self.n_rows = 0
        try:
            self.tmp = new_temp(path.parent, path.name)
        except OSError as err:
            raise FeatstoreError(f"cannot write to the output folder {path.parent}: {err.strerror}") from err
        self._pq = None
        self._text = None
        self._csv = None
        if self.format == "parquet":
            self._open_parquet()
        else:
            self._text = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
            if self.format == "csv":
                self._csv = csv.writer(self._text, lineterminator="\n")
                tops = [f"top{j}_{part}" for j in range(1, self.k + 1) for part in ("class", "probability")]
                self._csv.writerow(["path", "prediction", "probability", *tops, "digest", "error"])

    def _open_parquet(self) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise MissingDependencyError(
                f"pyarrow is needed to write Parquet ({err}); run: pip install pyarrow, or write .csv/.jsonl"
            ) from err
        self._pa = pa
        top = pa.list_(pa.struct([("class", pa.string()), ("probability", pa.float64())]))
        self._schema = pa.schema(
            [
                ("path", pa.string()),
                ("prediction", pa.string()),
                ("probability", pa.float64()),
                ("top_k", top),
                ("digest", pa.string()),
                ("error", pa.string()),
            ]
        )
        self._schema = self._schema.with_metadata(
            {
                "classes": json.dumps(self.class_names),
                "top_k": str(self.k),
                **({} if self.reject_below is None else {"reject_below": repr(float(self.reject_below))}),
            }
        )
        self._pq = pq.ParquetWriter(str(self.tmp), self._schema)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)

    def write(self, batch: PredictionBatch) -> None:
        """Append the rows of `batch`."""
        rows = list(_records(batch, self.class_names, self.k, self.reject_below))
        self.n_rows += len(rows)
        if self.reject_below is not None:
            self.n_unknown += sum(1 for r in rows if r[1] == UNKNOWN)
        if self.format == "parquet":
            cols = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMNS]
            data = dict(zip(COLUMNS, map(list, cols), strict=True))
            data["top_k"] = [
                None if t is None else [{"class": c, "probability": p} for c, p in t] for t in data["top_k"]
            ]
            self._pq.write_table(self._pa.Table.from_pydict(data, schema=self._schema))
        elif self.format == "jsonl":
            out = io.StringIO()
            for path, pred, prob, top, digest, error in rows:
                rec = {
                    "path": path,
                    "prediction": pred,
                    "probability": prob,
                    "top_k": None if top is None else [{"class": c, "probability": p} for c, p in top],
                    "digest": digest,
                    "error": error,
                }
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._text.write(out.getvalue())
        else:
            for path, pred, prob, top, digest, error in rows:
                tops = [x for pair in (top or []) for x in (pair[0], repr(pair[1]))]
                tops += [""] * (2 * self.k - len(tops))
                self._csv.writerow(
                    [path, pred or "", "" if prob is None else repr(prob), *tops, digest or "", error or ""]
                )

    def close(self) -> None:
        """Close the temporary file (idempotent)."""
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        if self._text is not None:
            self._text.close()
            self._text = None

    def commit(self, replace: bool = True) -> None:
        """Finish, fsync and rename the file to the output; with `replace` False, an output that
        appeared meanwhile is kept and OutputExistsError raised."""
        self.close()
        refuse_existing(self.path, replace)
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise FeatstoreError(f"cannot write {self.path}: {err.strerror}") from err


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Read a predictions table back as a list of row dicts (`top_k` as a list of dicts)."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(str(path)).to_pylist()
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            k = sum(1 for c in rec if c.startswith("top") and c.endswith("_class"))
            top = [
                {"class": rec[f"top{j}_class"], "probability": float(rec[f"top{j}_probability"])}
                for j in range(1, k + 1)
                if rec[f"top{j}_class"]
            ]
            rows.append(
                {
                    "path": rec["path"],
                    "prediction": rec["prediction"] or None,
                    "probability": float(rec["probability"]) if rec["probability"] else None,
                    "top_k": top or None,
                    "digest": rec["digest"] or None,
                    "error": rec["error"] or None,
                }
            )
    return rows
