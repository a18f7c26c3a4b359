"""The Python API: a `Store` whose methods mirror the CLI's commands, with the same option names.

    store = featstore.Store("store")
    store.extract("photos/", backbone="mobilenet_v2", batch_size=64)   # featstore extract
    X, y = store.feature_set("photos@mobilenet_v2").to_numpy()
    [best, *_] = store.fit_head("all", features="photos@mobilenet_v2")  # featstore fit-head all
    proba = store.head(best.head_id).predict(["new/1.jpg", "new/2.jpg"]).proba
    store.report().to_markdown()

Each method takes the command's options as keyword arguments named as the library names them
(`--batch-size` is `batch_size`, `--workers` is `n_workers`) and calls the one library function
the CLI calls, which builds its option objects from them (`featstore.options.merge_options`).
Imports every layer below it, inside the methods; nothing imports it but the `featstore`
namespace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featstore.jobs import JobOptions
from featstore.options import merge_options
from featstore.store.layout import StoreLayout, resolve_store


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

    def predict(self, images, *, use_store: bool = True, progress=None, **options):
        """Predict the classes of images: the head's backbone, then the head, nothing written.

        Parameters
        ----------
        images
            A folder, a .csv/.txt list, a glob or one image; a sequence of paths (one row each,
            in order); or pixels, an (n_images, S, S, 3) uint8 array at the head's input size.
        use_store
            Reuse the features of images already in the store.
        **options
            As `featstore score`: `device`, `batch_size`, `n_threads`, `engine`, `decoder`,
            `n_workers`.

        Returns
        -------
        featstore.scoring.Predictions
            `proba` (n_images, n_classes) float32 (NaN rows for unreadable images),
            `class_names`, `errors` and `paths`, row-aligned with the images.
        """
        from featstore.data.decode import DecodeOptions
        from featstore.runtime import RuntimeOptions
        from featstore.scoring import predict

        runtime, decode = merge_options({RuntimeOptions: None, DecodeOptions: None}, options)
        return predict(
            self.head_id,
            images,
            store=self.store.layout,
            runtime=runtime,
            decode=decode,
            use_store=use_store,
            progress=progress,
        )

    def evaluate(self, features: str | list[str]):
        """Score the head on feature sets (`featstore evaluate`); return the EvalResult."""
        return self.store.evaluate(self.head_id, features)

    def export(self, output: str | os.PathLike, *, overwrite: bool = False):
        """Write the head and its backbone as one ONNX file (`featstore export`)."""
        return self.store.export(self.head_id, output, overwrite=overwrite)


class Store:
    """A featstore store (default `$FEATSTORE_HOME`, else `./store`): the CLI's commands as methods.

    `emissions` and `country` apply to every computing command run through this object.
    """

    def __init__(
        self, root: str | os.PathLike | None = None, *, emissions: bool = True, country: str | None = None
    ):
        self.layout: StoreLayout = resolve_store(root)
        self.job = JobOptions(store=str(self.layout.root), emissions=emissions, country=country)

    @property
    def root(self) -> Path:
        """The store's folder."""
        return self.layout.root

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def _job(self, options: dict) -> JobOptions:
        """This store's JobOptions, with `emissions` or `country` given to one call."""
        if "store" in options:
            from featstore.errors import InvalidOptionError

            raise InvalidOptionError("store", "is the Store's own root; open another Store for another store")
        return replace(self.job, **{k: options.pop(k) for k in ("emissions", "country") if k in options})

    # ---------------------------------------------------------------- features

    def extract(self, data: str | os.PathLike, backbone: str = "mobilenet_v2", **options):
        """Images -> features in the store (`featstore extract`); return the ExtractResult.

        Options are `extract`'s keywords (`weights`, `input_size`, `batch_size`, `precision`,
        `resize`, `n_workers`, `augment`, `copies`, `name`, `force`, ...).
        """
        from featstore.extraction import extract

        return extract(os.fspath(data), backbone, job=self._job(options), **options)

    def feature_sets(self) -> list:
        """The feature sets in the store (`featstore store ls`)."""
        from featstore.store.maintenance import list_feature_sets

        return list_feature_sets(self.layout)

    def feature_set(self, name: str) -> FeatureSet:
        """Read feature set `name` (`dataset@backbone`) into memory."""
        from featstore.store.featuresets import open_feature_set

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

    # ---------------------------------------------------------------- heads

    def fit_head(self, kind: str, features: str | Sequence[str], **options) -> list:
        """Fit head `kind` (svm, logistic, dense, knn or all) on feature sets (`featstore
        fit-head`); return the FitResults, best validation accuracy first.

        Options are `fit_head`'s keywords (`C`, `kernel`, `hidden`, `dropout`, `epochs`, `k`,
        `scale`, `split`, `test_size`, `val_size`, `seed`, `name`, `use_augmented`, ...).
        """
        from featstore.heads import fit_head

        sets = [features] if isinstance(features, str) else list(features)
        return fit_head(kind, sets, job=self._job(options), **options)

    def sweep(self, features: str | Sequence[str], **options):
        """Fit a grid of head kinds and settings, choose on the validation part, save the best of
        each kind (`featstore fit-head sweep`); return the SweepResult (rows best first).

        Options are `sweep`'s keywords (`grid`: a file or a dict, None for the default 22
        settings; `ensemble`: K, also save the soft vote of the K best; `class_weight`, `split`,
        `test_size`, `val_size`, `seed`, `name`, `n_jobs`, ...).
        """
        from featstore.heads.sweep import sweep

        sets = [features] if isinstance(features, str) else list(features)
        return sweep(sets, job=self._job(options), **options)

    def few_shot(self, kind: str, features: str | Sequence[str], shots: Sequence[int], **options):
        """Few-shot curves (`featstore fit-head KIND --shots ...`): test accuracy of head `kind`
        (a kind, `all` or `sweep`) trained on `shots` images per class; return the
        FewShotResult (mean and standard deviation per head and shot count).

        Options: `repeats` (draws per value, 5), and `fit_head`'s or `sweep`'s keywords.
        """
        from featstore.data.splits import ShotOptions
        from featstore.heads.fewshot import few_shot

        sets = [features] if isinstance(features, str) else list(features)
        shot_options = ShotOptions(shots=tuple(shots), repeats=options.pop("repeats", ShotOptions.repeats))
        return few_shot(kind, sets, shots=shot_options, job=self._job(options), **options)

    def ensemble(self, heads: Sequence[str], name: str | None = None):
        """Save the soft vote of saved heads `heads` (same feature sets and split) as a head of
        kind `ensemble` (`featstore fit-head ensemble --heads A,B,C`); return its FitResult."""
        from featstore.heads.ensemble import fit_ensemble

        return fit_ensemble(list(heads), name=name, job=self.job)

    def heads(self) -> list[dict]:
        """The heads in the store, newest first (`featstore heads ls`)."""
        from featstore.store.head_files import list_heads

        return list_heads(self.layout)

    def head(self, head_id: str) -> Head:
        """Saved head `head_id`."""
        return Head(self, head_id)

    def evaluate(self, head: str, features: str | Sequence[str]):
        """Score saved head `head` on feature sets (`featstore evaluate`); return the EvalResult."""
        from featstore.heads import evaluate

        sets = [features] if isinstance(features, str) else list(features)
        return evaluate(head, sets, job=self.job)

    # ---------------------------------------------------------------- fine-tuning, scoring

    def finetune(self, data: str | os.PathLike, backbone: str = "mobilenet_v2", **options):
        """Train a network end to end (`featstore finetune`); return the FinetuneResult.

        Options are `finetune`'s keywords (`weights`, `input_size`, `epochs`, `unfreeze`,
        `augment`, `split`, `name`, `resume`, ...).
        """
        from featstore.finetune import finetune

        return finetune(os.fspath(data), backbone, job=self._job(options), **options)

    def score(self, input: str | os.PathLike, output: str | os.PathLike, **options):
        """Score images with a head (`head=`) or a fine-tuned run (`model="finetune:<id>"`) into a
        predictions file (`featstore score`); return the ScoreResult."""
        from featstore.scoring import score

        return score(os.fspath(input), os.fspath(output), job=self._job(options), **options)

    def export(self, head: str, output: str | os.PathLike, *, overwrite: bool = False):
        """Write head + backbone as one ONNX file (`featstore export`); return the DeployResult."""
        from featstore.scoring import export_head

        return export_head(head, output, store=str(self.root), overwrite=overwrite)

    # ---------------------------------------------------------------- inspect

    def inspect_duplicates(self, features: str, **options):
        """Identical files and near duplicates of feature set `features` (`featstore inspect
        duplicates`); return the Inspection. Options: `threshold`, `emissions`, `country`."""
        from featstore.inspect import find_duplicates

        return find_duplicates(features, job=self._job(options), **options)

    def inspect_leaks(self, features: str, against: str | None = None, **options):
        """Held-out images with a near duplicate among training images (`featstore inspect
        leaks`): the parts of the split a head would use, or every image against feature set
        `against`. Options: `threshold`, `split`, `test_size`, `val_size`, `seed`."""
        from featstore.inspect import find_leaks

        return find_leaks(features, against, job=self._job(options), **options)

    def inspect_labels(self, features: str, **options):
        """Likely label errors, ranked (`featstore inspect labels`; needs cleanlab). Options:
        `head`, `folds`, `C`, `seed`, `n_jobs`."""
        from featstore.inspect import find_label_issues

        return find_label_issues(features, job=self._job(options), **options)

    def inspect_map(self, features: str, output: str | os.PathLike | None = None, **options):
        """A 2-D map coloured by class, misclassified images marked (`featstore inspect map`).
        Options: `method`, `perplexity`, `seed`, `mark_misclassified`, `head`, `folds`, `C`,
        `overwrite`."""
        from featstore.inspect import draw_map

        out = None if output is None else os.fspath(output)
        return draw_map(features, out, job=self._job(options), **options)

    # ---------------------------------------------------------------- report

    def report(self, dataset: str | None = None):
        """Every recorded run side by side (`featstore report`): a Report with `rows`,
        `to_markdown()` and `to_html()`."""
        from featstore.report import build_report

        return build_report(self.layout, dataset=dataset)
