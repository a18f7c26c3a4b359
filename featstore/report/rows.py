"""The report's rows of each kind of run, from the run log and the head folders; a head's totals
add the extract runs that produced its features. A backbone's parameters and GFLOPs come from
the recipe stored with its feature set, as the recipe's source counts them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from featstore.backbones.recipes import BackboneRecipe, source_of
from featstore.errors import FeatstoreError, StoreError, UnknownHeadError
from featstore.heads.registry import trainable_params
from featstore.report.model import FINETUNE_METHODS, METHOD_EVALUATE, METHOD_EXTRACT, METHOD_HEAD, ReportRow
from featstore.store.head_files import head_dir, read_meta
from featstore.store.layout import StoreLayout
from featstore.store.runlog import EvaluateRecord, ExtractRecord, FinetuneRecord, FitRecord, RunRecord


def _estimated(runs: list[RunRecord]) -> bool | None:
    """Whether any run's energy was estimated; None when no run says."""
    flags = [run.emissions_estimated() for run in runs]
    return None if all(f is None for f in flags) else any(bool(f) for f in flags)


def own_costs(run: RunRecord) -> dict:
    """The cost fields of a row that counts its own run only (the totals are its figures)."""
    return {
        "seconds": run.seconds,
        "total_seconds": run.seconds,
        "energy_kwh": run.energy_kwh,
        "total_energy_kwh": run.energy_kwh,
        "co2_kg": run.co2_kg,
        "total_co2_kg": run.co2_kg,
        "emissions_estimated": _estimated([run]),
    }


def costs_with(run: RunRecord, deps: list[ExtractRecord]) -> dict:
    """The cost fields of a head row: its own figures, and totals that add the extract runs
    `deps` that produced its features (unknown when any is)."""
    runs = [run, *deps]
    return {
        "seconds": run.seconds,
        "total_seconds": sum_known([r.seconds for r in runs]),
        "energy_kwh": run.energy_kwh,
        "total_energy_kwh": sum_known([r.energy_kwh for r in runs]),
        "co2_kg": run.co2_kg,
        "total_co2_kg": sum_known([r.co2_kg for r in runs]),
        "emissions_estimated": _estimated(runs),
    }


def _metric(metrics: dict, part: str, key: str = "accuracy"):
    """`metrics[part][key]`, None when either is missing."""
    return ((metrics or {}).get(part) or {}).get(key)


def part_metrics(metrics: dict) -> dict:
    """The accuracy fields of a row from metrics per part (`{"train"|"val"|"test": {...}}`)."""
    return {
        "train_accuracy": _metric(metrics, "train"),
        "val_accuracy": _metric(metrics, "val"),
        "test_accuracy": _metric(metrics, "test"),
        "test_macro_f1": _metric(metrics, "test", "macro_f1"),
        "test_ece": _metric(metrics, "test", "ece"),
    }


def cv_of(meta: dict) -> dict:
    """The `cv_accuracy` and `cv_std` of a head chosen by cross-validation (fit-head or sweep)."""
    cv = meta.get("cv") or (meta.get("sweep") or {}).get("cv") or {}
    return {"cv_accuracy": cv.get("accuracy"), "cv_std": cv.get("std")}


def split_of(split: dict | None) -> dict:
    """The `split` (source) and `split_note` fields of a recorded split description."""
    split = split if isinstance(split, dict) else {}
    return {"split": split.get("source"), "split_note": split.get("note") or None}


def producer(
    candidates: list[tuple[int, ExtractRecord]], before: int | None
) -> tuple[int, ExtractRecord] | None:
    """The extract run that produced a feature set: the latest (before `before`) that computed rows."""
    eligible = [(i, r) for i, r in candidates if before is None or i < before]
    computed = [(i, r) for i, r in eligible if _computed(r)]
    return (computed or eligible or [None])[-1]


def _computed(run: ExtractRecord) -> bool:
    """True when the extract run computed or removed rows (a re-run that reused all did not)."""
    counts = run.counts if isinstance(run.counts, dict) else {}
    return bool(counts.get("n_computed") or counts.get("n_removed"))


def set_backbones(rows: Rows, sets: list[str]) -> dict:
    """The backbone label (`a+b` for joined sets), params and GFLOPs of feature sets `sets`."""
    params, gflops = rows.recipes.figures(sets)
    return {"backbone": "+".join(fs.split("@", 1)[-1] for fs in sets), "params": params, "gflops": gflops}


def extract_row(rows: Rows, run: ExtractRecord) -> ReportRow:
    """Row of the extract run that produced a feature set."""
    params, gflops = rows.recipes.figures([run.feature_set])
    return ReportRow(
        dataset=run.dataset or run.feature_set.split("@")[0],
        method=METHOD_EXTRACT,
        backbone=run.backbone,
        images_per_s=run.images_per_s,
        params_total=params,
        params_trainable=0,
        gflops_per_image=gflops,
        **own_costs(run),
        run_id=run.id,
        feature_sets=[run.feature_set],
        time=run.time,
    )


@dataclass
class Rows:
    """What the row builders share: the store, each feature set's extract runs and recipe, notes."""

    layout: StoreLayout
    extracts: dict[str, list[tuple[int, ExtractRecord]]]
    skipped: list[str]
    recipes: Recipes

    def head_meta(self, what: str, run: FitRecord) -> dict | None:
        """meta.json of the head of `run` (a `what` run), or None with a note when it is gone."""
        try:
            return read_meta(self.layout, run.head_id)
        except UnknownHeadError:
            self.skipped.append(
                f"{what} run {run.id}: head {run.head_id} is no longer in {self.layout.heads}; left out"
            )
        except StoreError as err:
            self.skipped.append(f"{what} run {run.id}: {err}; left out")
        return None

    def producers(self, head_id: str, sets: list[str], index: int) -> list[ExtractRecord]:
        """The extract run that produced each of `sets` before log line `index` (once each)."""
        deps = []
        for fs in dict.fromkeys(sets):
            found = producer(self.extracts.get(fs, []), before=index)
            if found is None:
                self.skipped.append(
                    f"head {head_id}: no extract run of {fs} in the run log; its totals count the fit only"
                )
            else:
                deps.append(found[1])
        return deps


def _head_epochs(folder: Path) -> int | None:
    """Epochs of a dense head (the length of its history.json's loss), else None."""
    if not (folder / "history.json").is_file():
        return None
    try:
        return len(json.loads((folder / "history.json").read_text()).get("loss", [])) or None
    except (OSError, ValueError):
        return None


def head_row(rows: Rows, index: int, run: FitRecord) -> ReportRow | None:
    """Row of a fit-head run, its totals adding its features' extractions; None (noted) when the
    head folder is gone."""
    meta = rows.head_meta(run.command or "fit-head", run)
    if meta is None:
        return None
    folder = head_dir(rows.layout, run.head_id)
    sets = list(meta.get("feature_sets") or run.feature_sets or [])
    deps = rows.producers(run.head_id, sets, index)
    backbone = set_backbones(rows, sets)
    trainable = trainable_params(meta)
    return ReportRow(
        dataset=sets[0].split("@")[0] if sets else "?",
        method=METHOD_HEAD,
        backbone=backbone["backbone"],
        head=meta.get("config", {}).get("kind", run.kind),
        epochs=_head_epochs(folder),
        **part_metrics(meta.get("metrics", {})),
        **cv_of(meta),
        images_per_s=meta.get("predict_images_per_s"),
        params_total=None if backbone["params"] is None else backbone["params"] + (trainable or 0),
        params_trainable=trainable,
        gflops_per_image=backbone["gflops"],
        **costs_with(run, deps),
        run_id=run.id,
        head_id=run.head_id,
        folder=str(folder),
        feature_sets=sets,
        depends_on=[r.id for r in deps],
        time=run.time,
        **split_of(meta.get("split")),
    )


def finetune_row(rows: Rows, run: FinetuneRecord) -> ReportRow | None:
    """Row of a finetune run; None (noted) for another method."""
    if run.method not in FINETUNE_METHODS:
        rows.skipped.append(
            f"finetune run {run.id}: method {run.method!r} is not fine-tune or scratch; left out"
        )
        return None
    history = run.history or {}
    folder = Path(run.folder) if run.folder else rows.layout.finetune / run.id
    return ReportRow(
        dataset=run.dataset or "?",
        method=run.method,
        backbone=run.backbone,
        head=run.head,
        epochs=run.epochs or len(history.get("loss", [])) or None,
        **part_metrics(run.metrics),
        images_per_s=run.images_per_s,
        params_total=run.params_total,
        params_trainable=run.params_trainable,
        gflops_per_image=run.gflops_per_image,
        **own_costs(run),
        run_id=run.id,
        folder=str(folder),
        feature_sets=list(run.feature_sets or []),
        time=run.time,
        **split_of(run.split or run.counts),
    )


def evaluate_row(rows: Rows, run: EvaluateRecord) -> ReportRow | None:
    """Row of an evaluate run under the evaluated dataset; None (noted) when the head is gone."""
    meta = rows.head_meta("evaluate", run)
    if meta is None:
        return None
    sets = list(run.feature_sets or [])
    metrics = run.metrics or {}
    backbone = set_backbones(rows, sets)
    if backbone["params"] is None:  # the evaluated sets are of the head's backbones (evaluate checks)
        params, gflops = rows.recipes.figures(list(meta.get("feature_sets") or []))
        backbone.update(params=params, gflops=gflops)
    trained = trainable_params(meta)
    return ReportRow(
        dataset=run.dataset or (sets[0].split("@")[0] if sets else "?"),
        method=METHOD_EVALUATE,
        backbone=backbone["backbone"],
        head=run.kind or meta.get("config", {}).get("kind"),
        test_accuracy=metrics.get("accuracy"),
        test_macro_f1=metrics.get("macro_f1"),
        seconds=run.seconds,
        total_seconds=run.seconds,
        images_per_s=run.images_per_s,
        params_total=None if backbone["params"] is None else backbone["params"] + (trained or 0),
        params_trainable=0,
        gflops_per_image=backbone["gflops"],
        run_id=run.id,
        head_id=run.head_id,
        feature_sets=sets,
        time=run.time,
    )


def extracts_by_set(records: list[RunRecord]) -> dict[str, list[tuple[int, ExtractRecord]]]:
    """The extract runs of each feature set, with their index in the log, in log order."""
    extracts: dict[str, list[tuple[int, ExtractRecord]]] = {}
    for i, run in enumerate(records):
        if isinstance(run, ExtractRecord) and run.feature_set:
            extracts.setdefault(run.feature_set, []).append((i, run))
    return extracts


def sum_known(values):
    """Sum of `values`, None when any is unknown (floats rounded to 12 significant digits)."""
    if any(v is None for v in values):
        return None
    total = sum(values)
    return total if isinstance(total, int) else float(f"{total:.12g}")


def recipe_figures(recipe: dict | None) -> tuple[int | None, float | None]:
    """(parameters, GFLOPs per image) of `recipe`'s backbone; (None, None) when its source does not
    know them."""
    if not recipe:
        return None, None
    try:
        r = BackboneRecipe.from_dict(recipe)
        return source_of(r).figures(r)
    except (TypeError, KeyError, FeatstoreError):
        return None, None


class Recipes:
    """The recipe of each feature set: its extract run's, else its file's (read once), else None."""

    def __init__(self, layout: StoreLayout, recorded: dict[str, dict]):
        self.layout, self._known = layout, dict(recorded)

    def of(self, feature_set: str) -> dict | None:
        """The recipe of `feature_set`, None when neither the run log nor the file has it."""
        if feature_set not in self._known:
            self._known[feature_set] = self._from_file(feature_set)
        return self._known[feature_set]

    def _from_file(self, feature_set: str) -> dict | None:
        from featstore.store.shards import stored_attrs

        try:
            return (stored_attrs(self.layout.feature_set(feature_set)) or {}).get("recipe")
        except FeatstoreError:
            return None

    def figures(self, sets: list[str]) -> tuple[int | None, float | None]:
        """(parameters, GFLOPs per image) of feature sets `sets` joined side by side; None when
        one is unknown."""
        pairs = [recipe_figures(self.of(s)) for s in sets]
        return sum_known([p for p, _ in pairs]), sum_known([g for _, g in pairs])
