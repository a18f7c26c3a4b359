"""The feature sets a sweep or a few-shot run fits on: each set alone, and all of them joined when
they hold the same images, each read once, with one split per set of images."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.data.options import SplitOptions
from featstore.data.splits import Split, make_split, split_from_digests
from featstore.errors import DatasetError
from featstore.heads.training_data import TrainingData, check_feature_sets, load_training_data
from featstore.reporter import Reporter
from featstore.store.layout import StoreLayout


@dataclass
class Source:
    """One feature-set combination: its label (`a@x` or `a@x+b@y`), rows, split and group (sources
    of the same images share a split and a choice)."""

    label: str
    data: TrainingData
    split: Split
    group: int


def load_sources(
    layout: StoreLayout, names: list[str], options: SplitOptions, reporter: Reporter, need_val: bool = True
) -> list[Source]:
    """Each feature set alone, and all joined when they hold the same images, each file read once;
    one split per set of images. With `need_val`, DatasetError for a split with no validation part."""
    check_feature_sets(names)
    cache: dict = {}
    datas = [(n, load_training_data(layout, [n], cache)) for n in names]
    same = len(names) > 1 and all(set(d.digests) == set(datas[0][1].digests) for _, d in datas)
    if same:
        datas.append(("+".join(names), load_training_data(layout, names, cache)))
    elif len(names) > 1:
        reporter.log(f"{', '.join(names)} do not hold the same images; each is swept alone, not joined")
    groups: dict[frozenset, tuple[int, Split, list[str]]] = {}
    out = []
    for label, data in datas:
        key = frozenset(data.digests)
        if key not in groups:
            split = make_split(data.labels, data.split, data.class_names, options, digests=data.digests)
            if split.note:
                reporter.log(f"{label}: {split.note}")
            if need_val and not len(split.val):
                raise DatasetError(
                    f"{label}: the split has no validation part, and a sweep chooses its settings on it; "
                    "give --val-size above 0 (or a val/ folder)"
                )
            groups[key] = (len(groups), split, data.digests)
        index, split, digests = groups[key]
        if data.digests is not digests:
            parts = {p: [digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
            split = split_from_digests(parts, data.digests, split.describe())
        out.append(Source(label, data, split, index))
    return out
