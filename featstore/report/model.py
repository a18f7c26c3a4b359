"""The comparison report: one row per recorded run (extract, fit-head, finetune, evaluate),
grouped by dataset, best test accuracy first, rendered as Markdown or as one self-contained HTML
page.

Reads the run log (`runs`), head folders (`headstore`) and backbone figures (`catalog`); the
HTML page lives in `report_page`. Never imports TensorFlow; matplotlib only to draw the page.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.errors import StoreError, UnknownHeadError
from featstore.store.head_files import head_dir, read_meta
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import read_runs

METHOD_EXTRACT = "extract"
METHOD_HEAD = "frozen features + head"
METHOD_EVALUATE = "evaluate"
FINETUNE_METHODS = ("fine-tune", "scratch")
#: What follows a registry name in a backbone label (see `BackboneRecipe.label`; the precision
#: suffix is `precision.precision_label`'s).
_LABEL_REST = re.compile(
    r"(?:-(?P<px>\d+)px)?(?:-random|-w[0-9a-f]{8})?(?P<layer>\.[^-]+)?(?:-max)?(?:-int8|-fp16)?"
)


@dataclass
class ReportRow:
    """One recorded run: accuracies are fractions 0..1, costs in s, kWh and kg CO2.

    `seconds`, `energy_kwh` and `co2_kg` are the run's own figures; the `total_` ones add, for
    a head, the extract run that produced each feature set it used (counted once per head).
    `params_total` counts backbone + head, `params_trainable` what the run trained (None for
    svm and knn, which have no fixed parameter count). `gflops_per_image` is the backbone's
    forward pass at the input size used. `depends_on` lists the run ids counted in the totals.

    An `evaluate` row is a saved head scored on another feature set: its dataset and backbone
    are the evaluated set's, `test_accuracy` and `test_macro_f1` are the figures on every
    labelled image of that set, `seconds` the evaluation's. `split` is how a head or fine-tune
    run split its images (stored, stratified or hash) and `split_note` the one line saying
    how stored parts were re-mapped (e.g. val used as the test set), else None.
    """

    dataset: str
    method: str
    backbone: str | None
    head: str | None
    epochs: int | None
    train_accuracy: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    test_macro_f1: float | None
    seconds: float | None
    total_seconds: float | None
    images_per_s: float | None
    params_total: int | None
    params_trainable: int | None
    gflops_per_image: float | None
    energy_kwh: float | None
    total_energy_kwh: float | None
    co2_kg: float | None
    total_co2_kg: float | None
    emissions_estimated: bool | None
    run_id: str
    head_id: str | None
    folder: str | None
    feature_sets: list[str]
    depends_on: list[str]
    time: str | None
    split: str | None = None
    split_note: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (keys are the field names)."""
        return asdict(self)


@dataclass
class Report:
    """Rows grouped by dataset (best test accuracy first) and what was left out, and why."""

    store: str
    rows: list[ReportRow]
    skipped: list[str]
    histories: dict[str, dict] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict of rows and skipped notes."""
        return {"store": self.store, "rows": [r.to_dict() for r in self.rows], "skipped": self.skipped}


def backbone_figures(label: str) -> tuple[int | None, float | None]:
    """Return (parameters, GFLOPs per image) of a registry backbone label such as `vgg16-160px`.

    GFLOPs are the catalog's at the native input size scaled by the input area; a label that is
    not a whole registry network (a user file, an intermediate `--layer`) gives (None, None).
    """
    from featstore.backbones.catalog import load_catalog
    from featstore.backbones.registry import available_backbones

    catalog = load_catalog()
    for name in sorted(available_backbones(), key=len, reverse=True):
        if not label.startswith(name):
            continue
        m = _LABEL_REST.fullmatch(label[len(name) :])
        entry = catalog.get(name)
        if m is None or m["layer"] or not entry:
            return None, None
        scale = (int(m["px"]) / entry["input_size"]) ** 2 if m["px"] else 1.0
        return entry["n_params"], round(entry["gflops"] * scale, 3)
    return None, None


def _sum(values):
    """Sum of `values`, None when any is unknown (floats rounded to 12 significant digits)."""
    if any(v is None for v in values):
        return None
    total = sum(values)
    return total if isinstance(total, int) else float(f"{total:.12g}")


def _figures(labels: list[str]) -> tuple[int | None, float | None]:
    pairs = [backbone_figures(b) for b in labels]
    return _sum([p for p, _ in pairs]), _sum([g for _, g in pairs])


def _head_params(meta: dict) -> int | None:
    """Trained parameters of a logistic or dense head from its meta.json; None for svm and knn."""
    cfg = meta.get("config", {})
    dims = [s.get("n_features") for s in meta.get("sources", [])]
    n_classes = len(meta.get("class_names", []))
    if not dims or None in dims or n_classes < 2:
        return None
    d = sum(dims)
    if cfg.get("kind") == "logistic":
        return (d + 1) * (1 if n_classes == 2 else n_classes)
    if cfg.get("kind") == "dense":
        sizes = [d, *cfg.get("hidden", []), n_classes]
        return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    return None


def _producer(candidates: list[tuple[int, dict]], before: int | None) -> tuple[int, dict] | None:
    """The extract run that produced a feature set: the latest (before `before`) that computed rows."""
    eligible = [(i, r) for i, r in candidates if before is None or i < before]
    computed = [
        (i, r)
        for i, r in eligible
        if (r.get("counts") or {}).get("n_computed") or (r.get("counts") or {}).get("n_removed")
    ]
    return (computed or eligible or [None])[-1]


def _estimated(runs: list[dict]) -> bool | None:
    flags = [(r.get("emissions") or {}).get("estimated") for r in runs]
    return None if all(f is None for f in flags) else any(bool(f) for f in flags)


def _metric(metrics: dict, part: str, key: str = "accuracy"):
    return (metrics.get(part) or {}).get(key)


def _extract_row(run: dict) -> ReportRow:
    params, gflops = _figures([run.get("backbone") or ""])
    own = [run.get("seconds"), run.get("energy_kwh"), run.get("co2_kg")]
    return ReportRow(
        run.get("dataset") or run["feature_set"].split("@")[0], METHOD_EXTRACT, run.get("backbone"),
        None, None, None, None, None, None, own[0], own[0], run.get("images_per_s"), params, 0,
        gflops, own[1], own[1], own[2], own[2], _estimated([run]), run["id"], None, None,
        [run["feature_set"]], [], run.get("time"),
    )  # fmt: skip


def _head_row(layout, index, run, extracts, skipped) -> ReportRow | None:
    head_id = run.get("head_id")
    try:
        meta = read_meta(layout, head_id)
    except UnknownHeadError:
        skipped.append(f"fit-head run {run['id']}: head {head_id} is no longer in {layout.heads}; left out")
        return None
    except StoreError as err:
        skipped.append(f"fit-head run {run['id']}: {err}; left out")
        return None
    folder = head_dir(layout, head_id)
    sets = list(meta.get("feature_sets") or run.get("feature_sets") or [])
    deps = []
    for fs in dict.fromkeys(sets):
        found = _producer(extracts.get(fs, []), before=index)
        if found is None:
            skipped.append(
                f"head {head_id}: no extract run of {fs} in the run log; its totals count the fit only"
            )
        else:
            deps.append(found[1])
    metrics, epochs = meta.get("metrics", {}), None
    if (folder / "history.json").is_file():
        try:
            epochs = len(json.loads((folder / "history.json").read_text()).get("loss", [])) or None
        except (OSError, ValueError):
            epochs = None
    backbone_params, gflops = _figures([fs.split("@", 1)[-1] for fs in sets])
    trainable = _head_params(meta)
    runs = [run, *deps]
    return ReportRow(
        sets[0].split("@")[0] if sets else "?", METHOD_HEAD,
        "+".join(fs.split("@", 1)[-1] for fs in sets), meta.get("config", {}).get("kind", run.get("kind")),
        epochs, _metric(metrics, "train"), _metric(metrics, "val"), _metric(metrics, "test"),
        _metric(metrics, "test", "macro_f1"), run.get("seconds"),
        _sum([r.get("seconds") for r in runs]), meta.get("predict_images_per_s"),
        None if backbone_params is None else backbone_params + (trainable or 0), trainable, gflops,
        run.get("energy_kwh"), _sum([r.get("energy_kwh") for r in runs]), run.get("co2_kg"),
        _sum([r.get("co2_kg") for r in runs]), _estimated(runs), run["id"], head_id, str(folder), sets,
        [r["id"] for r in deps], run.get("time"), *_split_of(meta.get("split")),
    )  # fmt: skip


def _finetune_row(layout: StoreLayout, run: dict, skipped: list[str]) -> ReportRow | None:
    """Row of a `finetune` run record: `method` ("fine-tune" or "scratch"), `dataset`,
    `backbone`, `head`, `epochs`, `metrics` {train,val,test: {accuracy, macro_f1}},
    `params_total`, `params_trainable`, `gflops_per_image`, `history` {loss, val_loss, ...},
    `folder` (default store/finetune/<id>), and the usual seconds, images_per_s, energy_kwh,
    co2_kg and emissions; every key but `method` may be missing."""
    method = run.get("method")
    if method not in FINETUNE_METHODS:
        skipped.append(f"finetune run {run['id']}: method {method!r} is not fine-tune or scratch; left out")
        return None
    metrics, history = run.get("metrics") or {}, run.get("history") or {}
    params, gflops = _figures([run["backbone"]]) if run.get("backbone") else (None, None)
    own = [run.get("seconds"), run.get("energy_kwh"), run.get("co2_kg")]
    folder = Path(run["folder"]) if run.get("folder") else layout.finetune / run["id"]
    return ReportRow(
        run.get("dataset") or "?", method, run.get("backbone"), run.get("head"),
        run.get("epochs") or len(history.get("loss", [])) or None, _metric(metrics, "train"),
        _metric(metrics, "val"), _metric(metrics, "test"), _metric(metrics, "test", "macro_f1"),
        own[0], own[0], run.get("images_per_s"), run.get("params_total", params),
        run.get("params_trainable"), run.get("gflops_per_image", gflops), own[1], own[1], own[2], own[2],
        _estimated([run]), run["id"], None, str(folder), list(run.get("feature_sets") or []), [],
        run.get("time"), *_split_of(run.get("split") or run.get("counts")),
    )  # fmt: skip


def _evaluate_row(layout: StoreLayout, run: dict, skipped: list[str]) -> ReportRow | None:
    """Row of an `evaluate` run record: `head_id`, `kind`, `dataset` and `feature_sets` (the
    evaluated sets), `metrics` {accuracy, macro_f1, ...} on every labelled row of them,
    `seconds` and `images_per_s`. Left out, and said so, when the head is gone."""
    head_id = run.get("head_id")
    try:
        meta = read_meta(layout, head_id)
    except UnknownHeadError:
        skipped.append(f"evaluate run {run['id']}: head {head_id} is no longer in {layout.heads}; left out")
        return None
    except StoreError as err:
        skipped.append(f"evaluate run {run['id']}: {err}; left out")
        return None
    sets = list(run.get("feature_sets") or [])
    metrics = run.get("metrics") or {}
    backbone_params, gflops = _figures([fs.split("@", 1)[-1] for fs in sets])
    trained = _head_params(meta)
    params = None if backbone_params is None else backbone_params + (trained or 0)
    seconds = run.get("seconds")
    return ReportRow(
        run.get("dataset") or (sets[0].split("@")[0] if sets else "?"), METHOD_EVALUATE,
        "+".join(fs.split("@", 1)[-1] for fs in sets), run.get("kind") or meta.get("config", {}).get("kind"),
        None, None, None, metrics.get("accuracy"), metrics.get("macro_f1"), seconds, seconds,
        run.get("images_per_s"), params, 0, gflops, None, None, None, None, None, run["id"], head_id,
        None, sets, [], run.get("time"),
    )  # fmt: skip


def _split_of(split: dict | None) -> tuple[str | None, str | None]:
    """(source, note) of a recorded split description; None for what it does not say."""
    split = split if isinstance(split, dict) else {}
    return split.get("source"), split.get("note") or None


def _sort_key(row: ReportRow):
    acc = row.test_accuracy
    return (row.dataset, acc is None, -(acc or 0.0), row.time or "")


def build_report(store: str | Path | None = None, dataset: str | None = None) -> Report:
    """Collect one row per recorded run from the store's run log, grouped and sorted.

    Parameters
    ----------
    store
        Store root (default `$FEATSTORE_HOME`, else `./store`).
    dataset
        Keep only the rows of this dataset.

    Returns
    -------
    Report
        `rows` (extract, fit-head, finetune and evaluate runs; an evaluate run under the
        dataset of the feature set it scored) sorted by dataset, then test accuracy (best
        first; extract rows last);
        `skipped` names every unreadable line, deleted head or missing extraction and why.
    """
    layout = resolve_store(store)
    runs, n_bad = read_runs(layout)
    skipped = []
    if n_bad:
        skipped.append(f"{layout.runs}: {n_bad} line(s) could not be read (a run killed while writing?)")
    extracts: dict[str, list[tuple[int, dict]]] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "id" not in run or "command" not in run:
            skipped.append(f"{layout.runs}: record {i + 1} is not a run (no id or command)")
        elif run["command"] == "extract" and run.get("feature_set"):
            extracts.setdefault(run["feature_set"], []).append((i, run))
    rows = [_extract_row(_producer(found, None)[1]) for found in extracts.values()]
    report = Report(str(layout.root), rows, skipped)
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "id" not in run:
            continue
        if run.get("command") == "fit-head":
            row = _head_row(layout, i, run, extracts, skipped)
        elif run.get("command") == "finetune":
            row = _finetune_row(layout, run, skipped)
            if row is not None and run.get("history"):
                report.histories[run["id"]] = run["history"]
        elif run.get("command") == "evaluate":
            row = _evaluate_row(layout, run, skipped)
        else:
            continue
        if row is not None:
            rows.append(row)
    if dataset is not None:
        have = sorted({r.dataset for r in rows})
        rows[:] = [r for r in rows if r.dataset == dataset]
        if not rows and have:
            skipped.append(f"no run of dataset {dataset!r}; datasets with runs: {', '.join(have)}")
    rows.sort(key=_sort_key)
    return report


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _params(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


#: (field, heading, formatter) of each table column, shared by the Markdown and HTML tables.
COLUMNS = [
    ("method", "method", str),
    ("backbone", "backbone", lambda v: v or "-"),
    ("head", "head", lambda v: v or "-"),
    ("epochs", "epochs", lambda v: _num(v, "d")),
    ("train_accuracy", "train acc", lambda v: _num(v, ".1%")),
    ("val_accuracy", "val acc", lambda v: _num(v, ".1%")),
    ("test_accuracy", "test acc", lambda v: _num(v, ".1%")),
    ("test_macro_f1", "macro F1", lambda v: _num(v, ".3f")),
    ("total_seconds", "wall s", lambda v: _num(v, ".3g")),
    ("images_per_s", "images/s", lambda v: _num(v, ",.0f")),
    ("params_total", "params", _params),
    ("params_trainable", "trainable", _params),
    ("gflops_per_image", "GFLOPs/image", lambda v: _num(v, ".3g")),
    ("total_energy_kwh", "kWh", lambda v: _num(v, ".3g")),
    ("total_co2_kg", "kg CO2", lambda v: _num(v, ".3g")),
    ("id", "id", str),
]
TOTALS_NOTE = (
    "Wall time, energy and CO2 of a head include the extraction of the features it used "
    "(counted once per head); `--json` also has each run's own figures. "
    "Energy and CO2 marked ~ are codecarbon estimates (no power counters)."
)
EVALUATE_NOTE = (
    "An `evaluate` row is a saved head (id) scored on the feature set of its dataset and backbone: "
    "test acc and macro F1 are on every labelled image of that set; wall s is the scoring."
)


def cells(row: ReportRow) -> list[str]:
    """The table cells of `row`, formatted (`id` is the head id, else the run id)."""
    out = []
    for name, _, fmt in COLUMNS:
        value = (row.head_id or row.run_id) if name == "id" else getattr(row, name)
        text = fmt(value)
        if name in ("total_energy_kwh", "total_co2_kg") and value is not None and row.emissions_estimated:
            text = "~" + text
        out.append(text)
    return out


def by_dataset(report: Report) -> dict[str, list[ReportRow]]:
    """The rows of `report` per dataset, in report order."""
    groups: dict[str, list[ReportRow]] = {}
    for row in report.rows:
        groups.setdefault(row.dataset, []).append(row)
    return groups


def split_notes(rows: list[ReportRow]) -> list[str]:
    """One line per distinct split note of the head and fine-tune rows of `rows` (such as
    `Split: no test split: val (120 images) is the held-out test set; ...`), naming the runs
    when the note is not every such row's."""
    trained = [r for r in rows if r.method not in (METHOD_EXTRACT, METHOD_EVALUATE)]
    notes: dict[str, list[str]] = {}
    for row in trained:
        if row.split_note:
            notes.setdefault(row.split_note, []).append(row.head_id or row.run_id)
    return [
        f"Split: {note}" + ("" if len(ids) == len(trained) else f" ({', '.join(ids)})")
        for note, ids in notes.items()
    ]


def render_markdown(report: Report) -> str:
    """Render the report as Markdown: one table per dataset, each followed by its split notes
    (skipped notes are not included)."""
    lines = ["# featstore report", "", f"Store: `{report.store}`.", ""]
    if not report.rows:
        return "\n".join(
            [*lines, "No runs to compare (run `featstore extract` and `featstore fit-head`).", ""]
        )
    lines += [TOTALS_NOTE, ""]
    if any(r.method == METHOD_EVALUATE for r in report.rows):
        lines += [EVALUATE_NOTE, ""]
    for name, rows in by_dataset(report).items():
        lines += [f"## {name}", "", "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"]
        lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
        lines.append("")
        notes = split_notes(rows)
        if notes:
            lines += [*notes, ""]
    return "\n".join(lines)


def render_html(report: Report, store: str | Path | None = None) -> str:
    """Render the report as one self-contained HTML page (see `featstore.report.html`)."""
    from featstore.report.html import render_page

    return render_page(report, resolve_store(store if store is not None else report.store))
