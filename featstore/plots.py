"""Pictures of recorded results: confusion matrices, comparison plots, learning curves, a sweep's
grid, few-shot curves. matplotlib only inside the functions that draw."""

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
    """PNG of test accuracy (0..1) against a cost (log x when it spans two decades): `points` of
    (x, accuracy, label, group), one colour per group (`colours`, else matplotlib's cycle)."""
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


def reliability_png(curves: dict[str, list[list[float]]], title: str) -> bytes:
    """Reliability diagram: for each head (name -> bins of [low, high, n, mean probability,
    accuracy]) accuracy against mean top probability per bin, the diagonal being calibrated;
    PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, bins in curves.items():
        if bins:
            ax.plot([b[3] for b in bins], [b[4] for b in bins], marker="o", markersize=3, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean top probability (test)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def sweep_png(rows: list[dict], title: str) -> bytes:
    """PNG of a sweep's grid: each setting's validation accuracy (a column per kind and features),
    the saved heads ringed with their test accuracy as a star. `rows` as the sweep's table."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("val_accuracy") is not None]
    columns = list(dict.fromkeys(_sweep_column(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(columns) + 2.5), 4.2), dpi=100)
    rng = np.random.default_rng(0)
    for ci, column in enumerate(columns):
        mine = [r for r in rows if _sweep_column(r) == column]
        xs = ci + rng.uniform(-0.18, 0.18, len(mine))
        ax.scatter(xs, [r["val_accuracy"] for r in mine], s=18, color=f"C{ci % 10}", alpha=0.75, zorder=3)
        for x, r in zip(xs, mine, strict=True):
            if r.get("chosen"):
                ax.scatter([x], [r["val_accuracy"]], s=90, facecolors="none", edgecolors="black", zorder=4)
                if r.get("test_accuracy") is not None:
                    ax.scatter([x], [r["test_accuracy"]], marker="*", s=110, color="black", zorder=5)
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    low = min((r["val_accuracy"] for r in rows), default=0.0)
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.scatter([], [], s=18, color="grey", label="validation accuracy")
    ax.scatter([], [], s=90, facecolors="none", edgecolors="black", label="saved (best of its kind)")
    ax.scatter([], [], marker="*", s=110, color="black", label="its test accuracy")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _sweep_column(row: dict) -> str:
    features = str(row.get("features") or "")
    return f"{row.get('kind')}\n{features}" if "+" in features else str(row.get("kind"))


def fewshot_png(curves: list[dict], title: str) -> bytes:
    """PNG of test accuracy (mean, std error bars) against shots (log when spanning a decade), a
    line per head and features; `curves` of head, features, shots, mean and std."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=100)
    several = len({c.get("features") for c in curves}) > 1
    lines: dict[str, list[dict]] = {}
    for c in curves:
        name = f"{c['head']} ({c['features']})" if several else str(c["head"])
        lines.setdefault(name, []).append(c)
    for name, points in lines.items():
        points = sorted(points, key=lambda p: p["shots"])
        ax.errorbar(
            [p["shots"] for p in points],
            [p["mean"] for p in points],
            yerr=[p.get("std") or 0.0 for p in points],
            marker="o",
            capsize=3,
            label=name,
        )
    shots = sorted({c["shots"] for c in curves})
    if shots and max(shots) / max(min(shots), 1) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
