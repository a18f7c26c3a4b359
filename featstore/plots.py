"""Pictures of recorded results: confusion matrices, comparison scatter plots, learning curves.

Imports matplotlib (Agg backend) only inside the functions that draw, and `deps`.
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    from featstore.deps import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(cm: list[list[int]], class_names: list[str], title: str) -> bytes:
    """Draw a confusion matrix (rows: true class, columns: predicted) with counts; return PNG bytes."""
    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > top / 2 else "black",
                fontsize=8,
            )
    return _png(fig)


def scatter_png(
    points: list[tuple[float, float, str, str]],
    x_label: str,
    title: str,
    colours: dict[str, str] | None = None,
) -> bytes:
    """Plot test accuracy (y, 0..1) against a cost (x, log scale when it spans two decades); PNG bytes.

    `points` holds (x, accuracy, label, group): each point labelled, one marker colour per group
    (from `colours`, else matplotlib's cycle), a linear x axis starting at 0.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=100)
    groups = sorted({p[3] for p in points})
    for gi, group in enumerate(groups):
        mine = [p for p in points if p[3] == group]
        colour = (colours or {}).get(group, f"C{gi}")
        ax.scatter([p[0] for p in mine], [p[1] for p in mine], label=group, color=colour, zorder=3)
    for i, (x, y, label, _) in enumerate(sorted(points)):  # staggered, so neighbours stay legible
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, (4, -10, 14)[i % 3]), fontsize=7)
    xs = [p[0] for p in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 100:
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, 1.15 * max(xs, default=0.0) or 1.0)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4))
    low = min((p[1] for p in points), default=0.0)
    ax.set_ylim(max(0.0, low - 0.05) - 0.01, 1.04)
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def learning_curves_png(history: dict[str, list[float]], title: str) -> bytes:
    """Draw Keras-style history (loss and accuracy per epoch, train and val) side by side; PNG bytes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key in (metric, f"val_{metric}"):
            values = history.get(key) or []
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
