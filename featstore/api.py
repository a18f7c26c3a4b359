"""The Python API: `Store`, whose methods are the CLI's commands with the same option names.

    store = featstore.Store("store")
    store.extract("photos/", backbone="mobilenet_v2", batch_size=64)   # featstore extract
    [best, *_] = store.fit_head("all", "photos@mobilenet_v2")         # featstore fit-head all

`Store` is the one place that turns keywords into option objects; an unknown keyword is refused
with the valid ones listed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from featstore.errors import InvalidOptionError
from featstore.options import JobOptions, Options
from featstore.store.layout import StoreLayout, resolve_store


def _fields(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def _pop(options: dict, cls: type[Options]):
    """A checked `cls` from the keywords of `options` naming its fields (taken out of `options`)."""
    return cls(**{k: options.pop(k) for k in _fields(cls) if k in options}).check()


def split_keywords(options: dict, *classes: type[Options], extra: Sequence[str] = ()) -> list:
    """One checked object per class of `classes` from the keywords naming its fields (a name two
    classes declare belongs to the first), then what is left of `options` (the names in
    `extra`, which the caller takes itself).

    Raises
    ------
    InvalidOptionError
        A keyword no class declares and not in `extra` (the message lists the valid ones), or a
        bad value.
    """
    owner: dict[str, type] = {}
    for cls in classes:
        for name in _fields(cls):
            owner.setdefault(name, cls)
    unknown = sorted(set(options) - set(owner) - set(extra))
    if unknown:
        valid = ", ".join(sorted({*owner, *extra}))
        raise InvalidOptionError(unknown[0], f"unknown option; valid ones: {valid}")
    made = [cls(**{k: v for k, v in options.items() if owner.get(k) is cls}).check() for cls in classes]
    return [*made, {k: v for k, v in options.items() if k not in owner}]


@dataclass
class FeatureSet:
    """A feature set of the store, read into memory.

    `features` (n_rows, n_features) float32 (or float16 as stored), `labels` (n_rows,) int64
    (-1: unlabelled), `paths` relative to the dataset folder, `digests` (SHA-256 of each image
    file), `split` ("train", "val", "test" or "") and `view` (0 for an image, 1.. for its
    augmented views); `class_names` and `attrs` (backbone, digests, input size, ...).
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    digests: list[str]
    split: list[str]
    view: np.ndarray
    class_names: list[str]
    attrs: dict

    def to_numpy(self, views: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return `(X, y)`: features (n, n_features) and labels (n,) of the images (their
        augmented views too with `views`)."""
        keep = np.ones(len(self.labels), bool) if views else self.view == 0
        return self.features[keep], self.labels[keep]

    def to_pandas(self, views: bool = False):
        """Return a pandas DataFrame: path, label, class, split, digest, view, then one column
        per feature `f0000`, `f0001`, ... (needs pandas)."""
        from featstore.deps import require

        pd = require("pandas")
        keep = np.ones(len(self.labels), bool) if views else self.view == 0
        idx = np.flatnonzero(keep)
        names = [self.class_names[i] if i >= 0 else None for i in self.labels[idx]]
        meta = pd.DataFrame(
            {
                "path": [self.paths[i] for i in idx],
                "label": self.labels[idx],
                "class": names,
                "split": [self.split[i] for i in idx],
                "digest": [self.digests[i] for i in idx],
                "view": self.view[idx],
            }
        )
        width = max(4, len(str(self.features.shape[1])))
        cols = pd.DataFrame(
            self.features[idx], columns=[f"f{j:0{width}d}" for j in range(self.features.shape[1])]
        )
        return pd.concat([meta, cols], axis=1)


class Head:
    """A saved head of the store: its meta, and predictions as arrays."""

    def __init__(self, store: Store, head_id: str):
        from featstore.store.head_files import read_meta

        self.store, self.head_id = store, head_id
        self.meta: dict = read_meta(store.layout, head_id)

    @property
    def class_names(self) -> list[str]:
        """The classes the head predicts, in the order of its probability columns."""
        return list(self.meta["class_names"])

    def predict(self, images, *, use_store: bool = True, **options):
        """Predict the classes of images: the head's backbone, then the head, nothing written.

        `images` is a folder, a .csv/.txt list, a glob or one image; a sequence of paths (one
        row each, in order); or pixels, an (n_images, S, S, 3) uint8 array at the head's input
        size. With `use_store`, features of images already in the store are reused. Options
        are `featstore score`'s: `device`, `batch_size`, `n_threads`, `runtime`, `engine`,
        `decoder`, `n_workers`.

        Returns
        -------
        featstore.scoring.arrays.Predictions
            `proba` (n_images, n_classes) float32 (NaN rows for unreadable images),
            `class_names`, `errors` and `paths`, row-aligned with the images.
        """
        from featstore.data.options import DecodeOptions
        from featstore.inference.options import InferenceOptions
        from featstore.scoring.arrays import predict

        inference, decode, _ = split_keywords(options, InferenceOptions, DecodeOptions)
        return predict(
            self.head_id,
            images,
            store=self.store.layout,
            inference=inference,
            decode=decode,
            use_store=use_store,
        )

    def evaluate(self, features: str | list[str]):
        """Score the head on feature sets (`featstore evaluate`); return the EvalResult."""
        return self.store.evaluate(self.head_id, features)

    def export(
        self, output: str | os.PathLike, *, overwrite: bool = False, reject_below: float | None = None
    ):
        """Write the head and its backbone as one ONNX file (`featstore export`)."""
        return self.store.export(self.head_id, output, overwrite=overwrite, reject_below=reject_below)


def _sets(features: str | Sequence[str]) -> list[str]:
    return [features] if isinstance(features, str) else list(features)


class Store:
    """A featstore store (default `$FEATSTORE_HOME`, else `./store`): the CLI's commands as methods.

    `emissions` and `country` apply to every computing command run through this object (or to
    one call, given to it). `reporter` (a `featstore.reporter.Reporter`) gets every call's notes
    and progress.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        emissions: bool = True,
        country: str | None = None,
        reporter=None,
    ):
        from featstore.reporter import SILENT

        self.layout: StoreLayout = resolve_store(root)
        self.job = JobOptions(store=str(self.layout.root), emissions=emissions, country=country)
        self.reporter = reporter or SILENT

    @property
    def root(self) -> Path:
        """The store's folder."""
        return self.layout.root

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def _job(self, options: dict) -> JobOptions:
        """This store's JobOptions, with `emissions` or `country` given to one call."""
        if "store" in options:
            raise InvalidOptionError("store", "is the Store's own root; open another Store for another store")
        return replace(self.job, **{k: options.pop(k) for k in ("emissions", "country") if k in options})

    def _run(self, options: dict) -> dict:
        """The keywords every computing call takes: its job and this store's reporter."""
        return {"job": self._job(options), "reporter": self.reporter}

    # ---------------------------------------------------------------- features

    def extract(self, data: str | os.PathLike, backbone: str = "mobilenet_v2", **options):
        """Images -> features in the store (`featstore extract`); return the ExtractResult.

        Options are `extract`'s keywords (`weights`, `input_size`, `batch_size`, `precision`,
        `resize`, `n_workers`, `augment`, `copies`, `name`, `force`, ...).
        """
        from featstore.backbones.options import BackboneOptions
        from featstore.data.options import AugmentOptions, DecodeOptions
        from featstore.extraction.job import extract
        from featstore.extraction.options import ExtractOptions
        from featstore.inference.options import InferenceOptions, PrecisionOptions

        run = self._run(options)
        classes = (
            BackboneOptions,
            DecodeOptions,
            InferenceOptions,
            PrecisionOptions,
            AugmentOptions,
            ExtractOptions,
        )
        bb, decode, inference, precision, augment, own, _ = split_keywords(
            {"backbone": backbone, **options}, *classes
        )
        return extract(
            os.fspath(data), bb, decode=decode, inference=inference, precision=precision, augment=augment,
            options=own, **run,
        )  # fmt: skip

    def add_backbone(self, name: str, source: str | os.PathLike, **options):
        """Add a network file as backbone `name` (`featstore backbones add`); options are
        `AddOptions`' fields (`config`, `preprocess`, `mean`, `std`, `output`, `pooling`, ...).
        Returns its card (`AddedBackbone`)."""
        from featstore.backbones.adding import add_backbone
        from featstore.backbones.options import AddOptions

        add = split_keywords(options, AddOptions)[0]
        return add_backbone(name, source, add, store=self.layout)

    def remove_backbone(self, name: str):
        """Remove the backbone added as `name` (`featstore backbones rm`); return its card."""
        from featstore.backbones.adding import remove_backbone

        return remove_backbone(name, self.layout)

    def backbones(self) -> list:
        """The cards of the backbones added to this store (`AddedBackbone`)."""
        from featstore.backbones.adding import added_backbones

        return added_backbones(self.layout)

    def feature_sets(self) -> list:
        """The feature sets in the store (`featstore store ls`)."""
        from featstore.store.maintenance import list_feature_sets

        return list_feature_sets(self.layout)

    def feature_set(self, name: str) -> FeatureSet:
        """Read feature set `name` (`dataset@backbone`) into memory."""
        from featstore.store.shards import open_feature_set

        with open_feature_set(self.layout, name) as reader:
            rows = reader.rows()
            return FeatureSet(
                name,
                reader.read_features(),
                np.asarray(rows.labels, dtype=np.int64),
                list(rows.paths),
                list(rows.digests),
                list(rows.split),
                np.asarray(rows.view),
                list(reader.class_names),
                dict(reader.attrs),
            )

    def verify(self):
        """Read every store file back and check it (`featstore store verify`)."""
        from featstore.store.maintenance import verify_store

        return verify_store(self.layout)

    def compact(self, names: str | Sequence[str] | None = None):
        """Merge small shards and drop the rows of gone files for good (`featstore store compact`)."""
        from featstore.store.maintenance import compact_feature_sets

        return compact_feature_sets(self.layout, None if names is None else _sets(names))

    # ---------------------------------------------------------------- heads

    def _heads(self, kind: str, options: dict, extra: Sequence[str] = ()):
        """The split and the head parameters of `kind` from keywords (`seed` seeds both)."""
        from featstore.data.options import SplitOptions
        from featstore.heads.registry import feature_kinds, make_params

        if "seed" in options:
            options.setdefault("random_state", options["seed"])
        names = {n for k in feature_kinds() for n in k.params.names()} | {"random_state"}
        split, rest = split_keywords(options, SplitOptions, extra=[*names, *extra])
        head = {k: v for k, v in rest.items() if k in names}
        return split, make_params(kind, head), {k: v for k, v in rest.items() if k not in names}

    def fit_head(self, kind: str, features: str | Sequence[str], **options) -> list:
        """Fit head `kind` (svm, logistic, dense, knn or all) on feature sets (`featstore
        fit-head`); return the FitResults, best validation accuracy first.

        Options are the kind's parameters (`C`, `kernel`, `hidden`, `dropout`, `epochs`, `k`,
        `scale`, `class_weight`, ...), the split's (`split`, `test_size`, `val_size`, `seed`;
        `max_rows`: fit on a stratified sample of a large set; `stream`: leave the features in
        the shards and read them a block at a time, dense and logistic), how heads are scored
        before test (`select` auto, val or cv, `cv_folds`, `cv_repeats`),
        `calibrate` (sigmoid, isotonic or temperature), `name`, `use_augmented` and `n_jobs`.
        """
        from featstore.heads.fitting import fit_head
        from featstore.heads.params import SelectOptions

        run = self._run(options)
        select = _pop(options, SelectOptions)
        split, params, rest = self._heads(kind, options, extra=("name", "use_augmented", "n_jobs"))
        one = params if kind == "all" else params[0]
        return fit_head(one, _sets(features), split=split, select=select, **rest, **run)

    def sweep(self, features: str | Sequence[str], **options):
        """Fit a grid of head kinds and settings, choose on data the test never sees, save the best
        of each kind (`featstore fit-head sweep`); return the SweepResult (rows best first).

        Options: `grid` (a file or a dict; None: the default 22 settings), `ensemble` (K picks of a
        greedy ensemble, chosen only beyond noise), `select` (auto, val or cv), `cv_folds`,
        `cv_repeats`, `calibrate`, head parameters every setting starts from
        (`class_weight`, `epochs`, ...), the split's, `name` and `n_jobs`.
        """
        from featstore.heads.params import SweepOptions
        from featstore.heads.sweep import sweep

        run = self._run(options)
        sweep_options = _pop(options, SweepOptions)
        split, base, rest = self._heads("all", options, extra=("name", "n_jobs"))
        return sweep(_sets(features), options=sweep_options, base=base, split=split, **rest, **run)

    def few_shot(self, kind: str, features: str | Sequence[str], shots: Sequence[int], **options):
        """Few-shot curves (`featstore fit-head KIND --shots ...`): test accuracy of head `kind`
        (a kind, `all` or `sweep`) trained on `shots` images per class; return the
        FewShotResult (mean and standard deviation per head and shot count).

        Options: `repeats` (draws per value, 5), `grid` (a sweep's), head parameters, the
        split's and `n_jobs`.
        """
        from featstore.data.options import ShotOptions
        from featstore.heads.fewshot import few_shot
        from featstore.heads.params import SweepOptions

        run = self._run(options)
        draws = ShotOptions(tuple(shots), options.pop("repeats", ShotOptions.repeats))
        if kind == "sweep":
            swept = _pop(options, SweepOptions)
        elif "grid" in options:
            raise InvalidOptionError("grid", f"a grid is for a sweep, not for fit-head {kind}")
        split, params, rest = self._heads("all" if kind == "sweep" else kind, options, extra=("n_jobs",))
        heads = swept if kind == "sweep" else params
        base = params if kind == "sweep" else ()
        return few_shot(heads, _sets(features), shots=draws, base=base, split=split, **rest, **run)

    def ensemble(self, heads: Sequence[str], name: str | None = None):
        """Save the soft vote of saved heads `heads` (same feature sets and split) as a head of
        kind `ensemble` (`featstore fit-head ensemble --heads A,B,C`); return its FitResult."""
        from featstore.heads.ensemble import ensemble

        return ensemble(list(heads), name=name, job=self.job, reporter=self.reporter)

    def heads(self) -> list[dict]:
        """The heads in the store, newest first (`featstore heads ls`)."""
        from featstore.store.head_files import list_heads

        return list_heads(self.layout)

    def trust_head(self, head_id: str) -> bool:
        """Convert head `head_id` saved as a pickle by an earlier version (`featstore heads trust`);
        False when it needs no conversion."""
        from featstore.store.head_files import trust_head

        return trust_head(self.layout, head_id)

    def head(self, head_id: str) -> Head:
        """Saved head `head_id`."""
        return Head(self, head_id)

    def evaluate(self, head: str, features: str | Sequence[str]):
        """Score saved head `head` on feature sets (`featstore evaluate`); return the EvalResult."""
        from featstore.heads.evaluation import evaluate

        return evaluate(head, _sets(features), job=replace(self.job, emissions=False))

    # ---------------------------------------------------------------- fine-tuning, scoring

    def finetune(self, data: str | os.PathLike | None, backbone: str | None = "mobilenet_v2", **options):
        """Train a network end to end (`featstore finetune`); return the FinetuneResult.

        Options are `finetune`'s keywords (`weights`, `input_size`, `epochs`, `unfreeze`,
        `augment`, `test_size`, `device`, `name`, `resume`, ...).
        """
        from featstore.data.options import DecodeOptions, SplitOptions
        from featstore.finetune.options import FinetuneOptions, NetworkOptions, TrainingOptions
        from featstore.finetune.run import finetune

        run = self._run(options)
        parts = (NetworkOptions, TrainingOptions, SplitOptions, DecodeOptions)
        *made, rest = split_keywords(options, *parts, extra=("device", "name", "resume"))
        device = rest.pop("device", FinetuneOptions.device)
        data = None if data is None else os.fspath(data)
        return finetune(data, backbone, options=FinetuneOptions(*made, device=device), **rest, **run)

    def score(self, input: str | os.PathLike, output: str | os.PathLike, **options):
        """Score images with a head (`head=`) or a fine-tuned run (`model="finetune:<id>"`) into a
        predictions file (`featstore score`); return the ScoreResult."""
        from featstore.data.options import DecodeOptions
        from featstore.inference.options import InferenceOptions
        from featstore.scoring.jobs import score
        from featstore.scoring.options import ScoreOptions

        run = self._run(options)
        given = {"input": os.fspath(input), "output": os.fspath(output), **options}
        what, inference, decode, _ = split_keywords(given, ScoreOptions, InferenceOptions, DecodeOptions)
        return score(what, inference=inference, decode=decode, **run)

    def export(
        self,
        head: str,
        output: str | os.PathLike,
        *,
        overwrite: bool = False,
        reject_below: float | None = None,
    ):
        """Write head + backbone as one ONNX file (`featstore export`; with `reject_below`, also a
        `label` output, -1 for unknown); return the DeployResult."""
        from featstore.scoring.deploy import export_head

        return export_head(head, output, store=str(self.root), overwrite=overwrite, reject_below=reject_below)

    # ---------------------------------------------------------------- inspect

    def inspect_duplicates(self, features: str, **options):
        """Identical files and near duplicates of feature set `features` (`featstore inspect
        duplicates`); return the Inspection. Options: `threshold`."""
        from featstore.inspect.duplicates import find_duplicates
        from featstore.inspect.options import SimilarityOptions

        run = self._run(options)
        similarity, _ = split_keywords(options, SimilarityOptions)
        return find_duplicates(features, similarity=similarity, **run)

    def inspect_leaks(self, features: str, against: str | None = None, **options):
        """Held-out images with a near duplicate among training images (`featstore inspect
        leaks`): the parts of the split a head would use, or every image against feature set
        `against`. Options: `threshold`, `split`, `test_size`, `val_size`, `seed`."""
        from featstore.data.options import SplitOptions
        from featstore.inspect.leaks import find_leaks
        from featstore.inspect.options import SimilarityOptions

        run = self._run(options)
        similarity, split, _ = split_keywords(options, SimilarityOptions, SplitOptions)
        return find_leaks(features, against, similarity=similarity, split=split, **run)

    def inspect_labels(self, features: str, **options):
        """Likely label errors, ranked (`featstore inspect labels`; needs cleanlab). Options:
        `head`, `folds`, `C`, `seed`, `n_jobs`."""
        from featstore.inspect.labels import find_label_issues
        from featstore.inspect.options import CrossValOptions

        run = self._run(options)
        crossval, _ = split_keywords(options, CrossValOptions)
        return find_label_issues(features, crossval=crossval, **run)

    def inspect_map(self, features: str, output: str | os.PathLike | None = None, **options):
        """A 2-D map coloured by class, misclassified images marked (`featstore inspect map`).
        Options: `method`, `perplexity`, `seed`, `mark_misclassified`, `head`, `folds`, `C`,
        `overwrite`."""
        from featstore.inspect.maps import draw_map
        from featstore.inspect.options import CrossValOptions, MapOptions

        run = self._run(options)
        layout, crossval, rest = split_keywords(options, MapOptions, CrossValOptions, extra=("overwrite",))
        out = None if output is None else os.fspath(output)
        return draw_map(features, out, map_options=layout, crossval=crossval, **rest, **run)

    def search(self, features: str, images: str | os.PathLike | Sequence, **options):
        """The stored images of `features` most like each query image (`featstore search`):
        `images` is a path or a list of paths. Options: `k`, `method`, `device`, `runtime`,
        `n_threads`. Returns a `SearchResult` (`.queries`, `.rows()`)."""
        from featstore.inference.options import InferenceOptions
        from featstore.inspect.options import SearchOptions
        from featstore.inspect.search import search

        what, inference, _ = split_keywords(options, SearchOptions, InferenceOptions)
        queries = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        return search(features, queries, what, inference=inference, store=self.layout)

    # ---------------------------------------------------------------- report

    def report(self, dataset: str | None = None):
        """Every recorded run side by side (`featstore report`): a Report whose rows
        `featstore.render_markdown` and `featstore.render_html` render."""
        from featstore.report.build import build_report

        return build_report(self.layout, dataset=dataset)
