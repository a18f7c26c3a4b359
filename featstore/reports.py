"""Pictures and documents made from recorded results: confusion matrices, model cards.

Imports matplotlib (Agg backend) only inside the functions that draw.
"""

from __future__ import annotations

import io

import numpy as np


def confusion_png(cm: list[list[int]], class_names: list[str], title: str) -> bytes:
    """Draw a confusion matrix (rows: true class, columns: predicted) with counts; return PNG bytes."""
    from featstore.deps import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def model_card(meta: dict) -> str:
    """Render the Markdown model card of a head from its meta.json content."""
    m = meta.get("metrics", {})
    split = meta.get("split", {})
    em = meta.get("emissions", {}) or {}
    backbones = ", ".join(f"{s['backbone']} (digest {s['backbone_digest'][:12]})" for s in meta["sources"])
    lines = [
        f"# Model card: {meta['head_id']}",
        "",
        f"A `{meta['config']['kind']}` head trained by featstore {meta.get('featstore_version')} on "
        f"frozen features of {', '.join(f'`{f}`' for f in meta['feature_sets'])}.",
        "",
        "## Data",
        "",
        f"- Classes ({len(meta['class_names'])}): {', '.join(meta['class_names'])}",
        f"- Backbones: {backbones}",
        f"- Split: {split.get('source')} (train {split.get('n_train')}, val {split.get('n_val')}, "
        f"test {split.get('n_test')}; seed {split.get('seed')}); augmented training rows: "
        f"{meta.get('n_augmented_train', 0)}",
        "",
        "## Intended use",
        "",
        "Classifying new images of the same classes, taken like the training images, after the same "
        "backbone (`featstore score`). Not for classes outside the list, and not for decisions about "
        "people without a separate evaluation.",
        "",
        "## Metrics",
        "",
        "| split | accuracy | balanced accuracy | macro F1 | log loss |",
        "|---|---|---|---|---|",
    ]
    for part in ("val", "test"):
        if part in m:
            p = m[part]
            lines.append(
                f"| {part} | {_pct(p['accuracy'])} | {_pct(p['balanced_accuracy'])} | "
                f"{p['macro_f1']:.3f} | {p['log_loss']:.3f} |"
            )
    if "test" in m:
        lines += [
            "",
            "Per class (test):",
            "",
            "| class | precision | recall | F1 | images |",
            "|---|---|---|---|---|",
        ]
        for name, c in m["test"]["per_class"].items():
            lines.append(
                f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
            )
        lines += ["", "![confusion matrix on the test split](confusion_test.png)"]
    lines += [
        "",
        "## Limitations",
        "",
        "- The backbone is frozen: the head only sees what its features encode; accuracy on images "
        "unlike the training set (other cameras, lighting, sizes) is unknown.",
        "- Metrics come from one split of one dataset; small classes make them noisy.",
        "- Probabilities "
        + (
            "are calibrated on held-out folds (sigmoid)."
            if meta["config"]["kind"] == "svm"
            else "are the model's own and may be over-confident."
        ),
        "",
        "## Training cost",
        "",
        f"- Fit: {meta.get('fit_seconds')} s; prediction {meta.get('predict_images_per_s')} images/s "
        "(features to classes, backbone not included)",
        f"- Energy: {em.get('energy_kwh')} kWh, CO2: {em.get('co2_kg')} kg ({em.get('country')})"
        + (" (estimate)" if em.get("estimated") else ""),
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in sorted(meta.get("versions", {}).items())],
        "",
    ]
    return "\n".join(lines)
