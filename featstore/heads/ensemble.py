"""Ensembles: the soft vote of fitted heads on the same feature sets, saved as a head of kind
`ensemble` that every command treats like any other; its ONNX graph averages the members'."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from featstore.data.splits import Split, split_from_digests
from featstore.emissions import Emissions
from featstore.errors import ExportError, HeadError, InvalidOptionError, StoreMismatchError
from featstore.heads.results import FitResult
from featstore.heads.saved import Fitted, save_fitted, split_rows
from featstore.heads.training_data import TrainingData, load_training_data
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.head_files import head_dir, load_head
from featstore.store.layout import StoreLayout

KIND = "ensemble"
_JOIN = "it cannot join an ensemble"


class EnsembleHead(ClassifierMixin, BaseEstimator):
    """Soft voting of fitted heads on the same features: the weighted mean of their probabilities.

    `members` have scikit-learn's API (`classes_`: the class indices of their columns);
    `kinds` and `names` are each member's head kind and name (head id or sweep setting);
    `weights` one per member (default equal), normalised to sum to 1.
    """

    def __init__(self, members=(), kinds=(), names=(), weights=None):
        self.members = members
        self.kinds = kinds
        self.names = names
        self.weights = weights

    def fit(self, X=None, y=None) -> EnsembleHead:
        """Check the members and set `classes_` (every class a member knows), `weights_` and
        `n_features_in_`; the members are fitted already, `X` and `y` are not used."""
        if len(self.members) < 2:
            raise HeadError(f"an ensemble needs at least 2 heads, not {len(self.members)}")
        if not len(self.kinds) == len(self.names) == len(self.members):
            raise HeadError("an ensemble needs one kind and one name per member")
        w = np.ones(len(self.members)) if self.weights is None else np.asarray(self.weights, float)
        if w.shape != (len(self.members),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InvalidOptionError(
                "weights", f"must be one non-negative number per member, not {self.weights}"
            )
        self.weights_ = w / w.sum()
        self.classes_ = np.unique(np.concatenate([np.asarray(m.classes_, int) for m in self.members]))
        self.n_features_in_ = getattr(self.members[0], "n_features_in_", None)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Return (n, len(classes_)) float64: the weighted mean of the members' probabilities."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "weights_")
        out = np.zeros((len(X), len(self.classes_)))
        for member, w in zip(self.members, self.weights_, strict=True):
            cols = np.searchsorted(self.classes_, np.asarray(member.classes_, int))
            out[:, cols] += w * np.asarray(member.predict_proba(X), dtype=np.float64)
        return out

    def predict(self, X) -> np.ndarray:
        """Return (n,) predicted class indices."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def save_files(self, folder: Path) -> list[str]:
        """Write the members' own files into `member<i>/` of `folder`; return their relative names."""
        names = []
        for i, member in enumerate(self.members):
            if hasattr(member, "save_files"):
                sub = Path(folder) / f"member{i}"
                sub.mkdir(exist_ok=True)
                names += [f"member{i}/{name}" for name in member.save_files(sub)]
        return names

    def load_files(self, folder: Path) -> None:
        """Load the members' own files that `save_files` wrote."""
        for i, member in enumerate(self.members):
            if hasattr(member, "load_files"):
                member.load_files(Path(folder) / f"member{i}")


def ensemble_graph(ensemble: EnsembleHead, n_features: int, opset: int):
    """The ONNX graph of an ensemble: (N, n_features) float32 -> (N, len(classes_)) float32, every
    member's graph weighted and added; ExportError naming a member that cannot be converted."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.compose import add_prefix

    from featstore.heads.onnx_graphs import head_model, real_inputs, rewire

    n_all = int(ensemble.classes_.max()) + 1
    nodes, inits, opsets, outs, ir = [], [], {"": opset}, [], 3
    for i, (member, kind, name) in enumerate(
        zip(ensemble.members, ensemble.kinds, ensemble.names, strict=True)
    ):
        try:
            model = add_prefix(head_model(member, n_features, n_all, opset, kind=kind), f"m{i}/")
        except ExportError as err:
            raise ExportError(
                f"member {name} ({kind}) of the ensemble cannot be exported: {err}; an ensemble is one "
                "ONNX file only when every member converts"
            ) from err
        (inp,) = real_inputs(model.graph)
        rewire(model.graph.node, inp.name, "x")
        nodes += [
            *model.graph.node,
            helper.make_node("Mul", [model.graph.output[0].name, f"w{i}"], [f"v{i}"]),
        ]
        inits += [
            *model.graph.initializer,
            numpy_helper.from_array(np.float32(ensemble.weights_[i]), f"w{i}"),
        ]
        outs.append(f"v{i}")
        ir = max(ir, model.ir_version)
        for o in model.opset_import:
            domain = "" if o.domain == "ai.onnx" else o.domain
            opsets[domain] = max(opsets.get(domain, 0), o.version)
    nodes.append(helper.make_node("Sum", outs, ["total"]))
    inits.append(numpy_helper.from_array(np.asarray(ensemble.classes_, np.int64), "columns"))
    nodes.append(helper.make_node("Gather", ["total", "columns"], ["proba"], axis=1))
    graph = helper.make_graph(
        nodes,
        "ensemble",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_features])],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, ["n", len(ensemble.classes_)])],
        initializer=inits,
    )
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = max(ir, helper.find_min_ir_version_for(imports, ignore_unknown=True))
    return model, np.float32


# ---------------------------------------------------------------- saving


@dataclass
class Member:
    """One member of an ensemble to save: the fitted head, its kind, name and parameters."""

    estimator: object
    kind: str
    name: str
    config: dict


def vote(
    members: list[Member],
    data: TrainingData,
    split: Split,
    em: Emissions,
    extra: dict,
    weights: Sequence[float] | None = None,
) -> Fitted:
    """The soft vote of `members` (weighted by `weights`, default equal) as a head to save
    (`saved.save_fitted`) on `data` and `split`; `extra` goes into its meta.json (the members'
    names are added)."""
    t0 = time.perf_counter()
    names = [m.name for m in members]
    estimators, kinds = [m.estimator for m in members], [m.kind for m in members]
    ensemble = EnsembleHead(estimators, kinds, names, None if weights is None else list(weights)).fit()
    config = {
        "kind": KIND,
        "voting": "soft",
        "weights": [round(float(w), 6) for w in ensemble.weights_],
        "members": [{**m.config, "kind": m.kind, "name": m.name} for m in members],
    }
    fit_s = round(time.perf_counter() - t0, 3)
    return Fitted(ensemble, config, data, split, fit_s, em, extra={**extra, "members": names})


def _check_members(layout: StoreLayout, heads: list[str]) -> list[tuple[object, dict]]:
    """Load `heads` after checking they can vote together: at least 2, each once, the same
    feature sets, classes and split."""
    if len(heads) < 2:
        raise InvalidOptionError("heads", f"an ensemble needs at least 2 heads, not {len(heads)}")
    if len(set(heads)) != len(heads):
        raise InvalidOptionError("heads", f"lists a head twice: {', '.join(heads)}")
    loaded = [load_head(layout, h) for h in heads]
    first, meta0 = heads[0], loaded[0][1]
    for head, (_, meta) in zip(heads, loaded, strict=True):
        if meta.get("config", {}).get("kind") == KIND:
            raise HeadError(f"head {head} is an ensemble already; list its members instead")
        sets = [s.get("backbone_digest") for s in meta.get("sources", [])]
        if sets != [s.get("backbone_digest") for s in meta0.get("sources", [])]:
            raise StoreMismatchError(
                f"heads {first} ({' + '.join(meta0['feature_sets'])}) and {head} "
                f"({' + '.join(meta['feature_sets'])}) were fitted on different feature sets; an ensemble "
                "votes with heads of the same features (the same backbones, in the same order)"
            )
        if meta.get("class_names") != meta0.get("class_names"):
            raise StoreMismatchError(f"heads {first} and {head} predict different classes")
        if split_rows(layout, head, _JOIN) != split_rows(layout, first, _JOIN):
            raise HeadError(
                f"heads {first} and {head} were fitted on different splits, so one's test images may be "
                "the other's training images; fit them with the same --split, --test-size, --val-size "
                "and --seed"
            )
    return loaded


def ensemble(
    heads: Sequence[str],
    *,
    name: str | None = None,
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> FitResult:
    """Save the soft vote of saved heads `heads` (at least 2) as a head of kind `ensemble`.

    The members must share feature sets, classes and split; the ensemble is scored on that
    split's parts and holds its members, so it keeps working when a member head is removed.

    Raises
    ------
    InvalidOptionError
        Fewer than 2 heads, or one named twice.
    UnknownHeadError, StoreError
        A head is missing or its files changed.
    StoreMismatchError, HeadError
        Heads of other feature sets, classes or splits; an ensemble among them; a taken name.
    DatasetError
        An image of the members' split is no longer in their feature sets.
    """
    heads = list(heads)
    with run_job("fit-head", job, lazy=True, reporter=reporter) as run:
        if name and head_dir(run.layout, name).exists():
            raise HeadError(f"head {name} exists already; choose another --name or remove it")
        loaded = _check_members(run.layout, heads)
        meta0 = loaded[0][1]
        data = load_training_data(run.layout, list(meta0["feature_sets"]))
        split = split_from_digests(
            split_rows(run.layout, heads[0], _JOIN), data.digests, meta0.get("split") or {}
        )
        run.begin()
        members = [
            Member(est, meta["config"]["kind"], head, meta["config"])
            for head, (est, meta) in zip(heads, loaded, strict=True)
        ]
        em = run.stop_measuring()
        result, run.record = save_fitted(run.layout, run.run_id, name, vote(members, data, split, em, {}))
    return result
