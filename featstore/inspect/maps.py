"""`featstore inspect map`: a feature set laid out in 2-D (UMAP, t-SNE or PCA), coloured by class,
the images a cross-validated head misclassifies marked."""

from __future__ import annotations

import csv
import io
import shutil
import warnings
from pathlib import Path

import numpy as np

from featstore.deps import available, quiet_tensorflow, require
from featstore.errors import FeatstoreError, OutputExistsError
from featstore.files import new_temp, write_atomic
from featstore.inspect.crossval import cross_val_proba
from featstore.inspect.options import TSNE_MAX_IMAGES, CrossValOptions, MapOptions
from featstore.inspect.results import (
    Inspection,
    Timer,
    inspect_record,
    inspections_dir,
    write_inspection,
)
from featstore.inspect.sets import InspectSet, normalise_rows, open_set, raw_features
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import resolve_store

COLUMNS = ["class", "n_images", "n_misclassified", "accuracy"]
#: Principal components t-SNE starts from.
TSNE_DIMS = 50
#: Fewer images than this are laid out with PCA whatever the method (t-SNE and UMAP need more).
MIN_NONLINEAR = 8
UNLABELLED = "(unlabelled)"


def draw_map(
    features: str,
    output: str | Path | None = None,
    *,
    map_options: MapOptions = MapOptions(),
    crossval: CrossValOptions = CrossValOptions(),
    job: JobOptions = JobOptions(),
    overwrite: bool = False,
    reporter: Reporter = SILENT,
) -> Inspection:
    """Draw a 2-D map of the plain rows of feature set `features` as a PNG (kept in the store, and
    copied to `output` when given, replacing it only with `overwrite`).

    Returns
    -------
    Inspection
        `items`: one row per class (images, misclassified, cross-validated accuracy);
        `summary`: method, counts, the coordinates CSV; `picture`: the PNG in the store.

    Raises
    ------
    OutputExistsError
        `output` exists and `overwrite` is False.
    MissingDependencyError
        umap without umap-learn, or matplotlib missing.
    InvalidOptionError, UnknownFeatureSetError, DatasetError
        Bad options; a missing or empty set; NaN features.
    """
    map_options, crossval = map_options.check(), crossval.check()
    if output is not None and Path(output).expanduser().exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    layout = resolve_store(job.store)
    data = open_set(layout, features)
    method = resolve_method(map_options.method, len(data))
    with run_job("inspect", job, lazy=True, reporter=reporter) as run:
        timer = Timer()
        X = raw_features(layout, data)
        run.begin()
        predicted, notes = _marks(X, data, map_options, crossval)
        coords, method_note = embed(normalise_rows(X), method, map_options)
        del X
        emissions = run.stop_measuring()
        notes = [n for n in (method_note, *notes) if n]
        for line in notes:
            reporter.log(line)
        wrong = _misclassified(data, predicted)
        title = f"{features}: {method_name(method)} of {len(data)} images" + (
            f", {int(wrong.sum())} misclassified ({crossval.head}, {crossval.folds}-fold)"
            if predicted is not None
            else ""
        )
        png = map_png(coords, data.labels, data.class_names, wrong, title)
        items, summary = (
            _per_class(data, predicted, wrong),
            _summary(data, method, predicted, wrong, crossval),
        )
        result = Inspection(
            "map", run.run_id, [features], data.dataset,
            {**map_options.to_dict(), **({"crossval": crossval.to_dict()} if predicted is not None else {})},
            summary, COLUMNS, items, [], notes, emissions=emissions.to_dict(),
        )  # fmt: skip
        summary["coordinates"] = str(_write_coords(layout, run.run_id, data, coords, predicted, wrong))
        result.seconds = timer.seconds()
        write_inspection(layout, result, picture=png)
        if output is not None:
            result.output = str(_copy(result.picture, Path(output).expanduser()))
        counts = {"n_images": len(data), "n_misclassified": summary["n_misclassified"]}
        run.record = inspect_record(result, [data.backbone_digest], counts)
    return result


def resolve_method(method: str, n_images: int) -> str:
    """The layout `method` means for `n_images` (auto: umap when installed, else tsne up to
    TSNE_MAX_IMAGES, else pca); MissingDependencyError for umap without umap-learn."""
    if method == "umap":
        require("umap", extra="umap", package="umap-learn")
    if method != "auto":
        return method
    if available("umap"):
        return "umap"
    return "tsne" if n_images <= TSNE_MAX_IMAGES else "pca"


def method_name(method: str) -> str:
    """How a method is named in titles: UMAP, t-SNE or PCA."""
    return {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}[method]


def embed(X: np.ndarray, method: str, options: MapOptions) -> tuple[np.ndarray, str | None]:
    """2-D coordinates of unit rows `X` ((n, 2) float32) by `method`, and a note when another
    method had to be used (too few images)."""
    n = len(X)
    if n < MIN_NONLINEAR and method != "pca":
        note = f"{n} images are too few for {method_name(method)}: laid out with PCA"
        return _pca(X, 2, options.seed), note
    if method == "pca":
        return _pca(X, 2, options.seed), None
    if method == "umap":
        quiet_tensorflow()  # umap-learn imports TensorFlow (for its parametric variant) when present
        umap = require("umap", extra="umap", package="umap-learn")
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), metric="cosine", random_state=options.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": a seeded layout is wanted
            return np.asarray(reducer.fit_transform(X), dtype=np.float32), None
    from sklearn.manifold import TSNE

    start = _pca(X, TSNE_DIMS, options.seed) if X.shape[1] > TSNE_DIMS and n > TSNE_DIMS else X
    perplexity = float(min(options.perplexity, max(1.0, (n - 1) / 3)))
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=options.seed)
    return np.asarray(tsne.fit_transform(start), dtype=np.float32), None


def _pca(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if len(X) < 2:  # one image: the origin
        return np.zeros((len(X), max(2, min(k, X.shape[1]))), np.float32)
    k = min(k, X.shape[1], len(X))
    coords = PCA(k, random_state=seed).fit_transform(X).astype(np.float32)
    if coords.shape[1] < 2:  # one image, or one feature: a line
        coords = np.hstack([coords, np.zeros((len(X), 2 - coords.shape[1]), np.float32)])
    return coords


def _marks(X: np.ndarray, data: InspectSet, options: MapOptions, crossval: CrossValOptions):
    """Cross-validated predicted class of every row ((n,) int, -1 where none), or None with a
    note saying why there are no marks."""
    if not options.mark_misclassified:
        return None, []
    rows = np.flatnonzero(data.labels >= 0)
    if not len(rows):
        return None, [f"{data.name} has no labels: one colour, no misclassified marks"]
    try:
        cv = cross_val_proba(
            X[rows], data.labels[rows], [data.digests[i] for i in rows], data.class_names, crossval
        )
    except FeatstoreError as err:
        return None, [f"no misclassified marks: {err}"]
    predicted = np.full(len(data), -1, np.int64)
    predicted[rows] = cv.predicted
    return predicted, []


def _misclassified(data: InspectSet, predicted: np.ndarray | None) -> np.ndarray:
    if predicted is None:
        return np.zeros(len(data), bool)
    return (data.labels >= 0) & (predicted >= 0) & (predicted != data.labels)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = colormaps[name]
    return [cmap(i) for i in range(n)] if n <= 20 else [cmap(i / max(1, n - 1)) for i in range(n)]


def map_png(
    coords: np.ndarray, labels: np.ndarray, class_names: list[str], wrong: np.ndarray, title: str
) -> bytes:
    """PNG bytes of the map: `coords` (n, 2) coloured by `labels` (n,) int (-1, unlabelled: grey),
    `wrong` (n,) bool ringed in black, a legend of `class_names` up to 20 classes, `title`."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    n = len(coords)
    size = float(np.clip(3000 / max(n, 1), 3, 30))
    fig, ax = plt.subplots(figsize=(8.5, 6.5), dpi=100)
    colours = _colours(len(class_names))
    groups = [(labels == c, colours[c], name, 0.75) for c, name in enumerate(class_names)]
    for sel, colour, name, alpha in [*groups, (labels < 0, "0.6", UNLABELLED, 0.6)]:
        if sel.any():
            label = f"{name} ({int(sel.sum())})"
            ax.scatter(*coords[sel].T, s=size, color=colour, label=label, alpha=alpha, linewidths=0)
    if wrong.any():  # misclassified: their own colour, ringed in black, drawn on top
        ring = [colours[c] if c >= 0 else "0.6" for c in labels[wrong]]
        ax.scatter(*coords[wrong].T, s=size * 3, c=ring, edgecolors="black", linewidths=1.0,
                   label=f"misclassified ({int(wrong.sum())})")  # fmt: skip
    if len(class_names) <= 20:
        scale = max(1.0, 20 / size) ** 0.5
        legend = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=scale)
        if wrong.any():  # the ring's legend entry: white inside
            legend.legend_handles[-1].set_facecolor("white")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _per_class(data: InspectSet, predicted, wrong: np.ndarray) -> list[dict]:
    rows = []
    for c, name in enumerate(data.class_names):
        sel = data.labels == c
        if not sel.any():
            continue
        n_wrong = int(wrong[sel].sum())
        rows.append(
            {
                "class": name,
                "n_images": int(sel.sum()),
                "n_misclassified": n_wrong if predicted is not None else None,
                "accuracy": round(1 - n_wrong / int(sel.sum()), 6) if predicted is not None else None,
            }
        )
    if (data.labels < 0).any():
        rows.append({"class": UNLABELLED, "n_images": int((data.labels < 0).sum())})
    return rows


def _summary(data: InspectSet, method: str, predicted, wrong: np.ndarray, crossval: CrossValOptions) -> dict:
    n_labelled = int((data.labels >= 0).sum())
    return {
        "n_images": len(data),
        "n_labelled": n_labelled,
        "method": method,
        "n_misclassified": int(wrong.sum()) if predicted is not None else None,
        "cv_accuracy": round(1 - int(wrong.sum()) / n_labelled, 6)
        if predicted is not None and n_labelled
        else None,
        "head": crossval.head if predicted is not None else None,
        "folds": crossval.folds if predicted is not None else None,
    }


def _write_coords(layout, run_id: str, data: InspectSet, coords: np.ndarray, predicted, wrong) -> Path:
    """Write `<run-id>.csv` (path, label, x, y, predicted, misclassified) beside the result."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "x", "y", "predicted", "misclassified"])
    for i in range(len(data)):
        guess = data.class_names[int(predicted[i])] if predicted is not None and predicted[i] >= 0 else ""
        label = data.label_name(i) or ""
        writer.writerow(
            [data.paths[i], label, f"{coords[i, 0]:.5g}", f"{coords[i, 1]:.5g}", guess, int(wrong[i])]
        )
    folder = inspections_dir(layout)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.csv"
    write_atomic(path, buf.getvalue().encode())
    return path


def _copy(picture: str | None, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp(output.parent, output.name)
    try:
        shutil.copyfile(str(picture), tmp)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output
