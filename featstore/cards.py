"""Model cards: the Markdown `card.md` of a head or a fine-tune run, from its meta.json."""

from __future__ import annotations


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _split_note(split: dict) -> list[str]:
    """The model card line of the split's note (how stored parts were re-mapped), if any."""
    return [f"- Split note: {split['note']}"] if split.get("note") else []


def _metric_lines(m: dict) -> list[str]:
    """The "Metrics" section of a model card: one row per split, per-class test figures."""
    lines = [
        "## Metrics",
        "",
        "| split | accuracy | balanced accuracy | macro F1 | log loss |",
        "|---|---|---|---|---|",
    ]
    for part in ("train", "val", "test"):
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
    return lines


#: How a head's probabilities come about, when its kind does not say (`HeadKind.probabilities`).
OWN_PROBABILITIES = "are the model's own and may be over-confident."


def model_card(meta: dict, probabilities: str = OWN_PROBABILITIES) -> str:
    """Render the Markdown model card of a head from its meta.json content.

    `probabilities` ends the card's sentence "Probabilities ..." (the head kind's own words,
    e.g. the svm's "are calibrated on held-out folds (sigmoid).").
    """
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
        *_split_note(split),
        "",
        "## Intended use",
        "",
        "Classifying new images of the same classes, taken like the training images, after the same "
        "backbone (`featstore score`). Not for classes outside the list, and not for decisions about "
        "people without a separate evaluation.",
        "",
        *_metric_lines(m),
        "",
        "## Limitations",
        "",
        "- The backbone is frozen: the head only sees what its features encode; accuracy on images "
        "unlike the training set (other cameras, lighting, sizes) is unknown.",
        "- Metrics come from one split of one dataset; small classes make them noisy.",
        f"- Probabilities {probabilities}",
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


def _finetune_training_lines(meta: dict) -> list[str]:
    """The "Training" section of a fine-tune run's card: epochs, phases, settings, curves."""
    cfg = meta.get("config", {})
    phases = [
        f"- {p['phase']} from epoch {p['first_epoch']}: learning rate {p['learning_rate']:g}, "
        f"{p['n_trainable_params']:,} trainable parameters, "
        f"{len(p['backbone_layers_trained'])} backbone layers with weights trained"
        for p in meta.get("phases", [])
    ]
    return [
        "## Training",
        "",
        f"- Epochs run: {meta.get('epochs_run')} of {cfg.get('epochs')}; best epoch (lowest validation "
        f"loss, weights restored): {meta.get('best_epoch')}"
        + ("; stopped early" if meta.get("stopped_early") else ""),
        *phases,
        f"- Batch {cfg.get('batch_size')}, dropout {cfg.get('dropout')}, label smoothing "
        f"{cfg.get('label_smoothing')}, class weights {'on' if cfg.get('class_weights') else 'off'}, "
        f"seed {cfg.get('seed')}; device {meta.get('device')}"
        + (" (mixed precision)" if meta.get("mixed_precision") else ""),
        "",
        "![learning curves](learning_curves.png)",
    ]


def _finetune_cost_lines(meta: dict) -> list[str]:
    """The "Files and cost" section of a fine-tune run's card: exports, size, time, energy."""
    em = meta.get("emissions", {}) or {}
    return [
        "## Files and cost",
        "",
        "- ONNX exports checked against Keras: "
        + ", ".join(f"{k} (relative error {v:.1e})" for k, v in meta.get("export_errors", {}).items()),
        f"- Parameters: {meta.get('params_total'):,} ({meta.get('params_trainable'):,} trained); "
        f"{meta.get('gflops_per_image')} GFLOPs per image",
        f"- Wall time: {meta.get('seconds')} s (training {meta.get('train_seconds')} s, "
        f"{meta.get('train_images_per_s')} images/s); inference {meta.get('images_per_s')} images/s (ONNX)",
        f"- Energy: {em.get('energy_kwh')} kWh, CO2: {em.get('co2_kg')} kg ({em.get('country')})"
        + (" (estimate)" if em.get("estimated") else "")
        + (f"; {em.get('note')}" if em.get("note") and not em.get("estimated") else ""),
    ]


def finetune_card(meta: dict) -> str:
    """Render the Markdown model card of a fine-tune run from its meta.json content."""
    cfg = meta.get("config", {})
    split = meta.get("split", {})
    scratch = meta.get("method") == "scratch"
    start = "random weights (trained from scratch)" if scratch else f"the weights of `{meta.get('backbone')}`"
    lines = [
        f"# Model card: {meta['run_id']}",
        "",
        f"`{meta.get('backbone_label')}` trained end to end ({meta.get('method')}) by featstore "
        f"{meta.get('versions', {}).get('featstore')} on `{meta.get('dataset')}`, starting from {start}, "
        f"with a `{meta.get('head')}` head; {meta.get('input_size')} px inputs ({meta.get('resize')}).",
        "",
        "## Data",
        "",
        f"- Classes ({len(meta['classes'])}): {', '.join(meta['classes'])}",
        f"- Images: {meta.get('n_images')} ({meta.get('n_skipped', 0)} files skipped)",
        f"- Split: {split.get('source')} (train {split.get('n_train')}, val {split.get('n_val')}, "
        f"test {split.get('n_test')}; seed {split.get('seed')})",
        *_split_note(split),
        f"- Augmentation in training: {', '.join(cfg.get('augment') or []) or 'none'}",
        "",
        *_finetune_training_lines(meta),
        "",
        "## Intended use",
        "",
        "Classifying new images of the same classes, taken like the training images "
        "(`classifier.onnx`: uint8 RGB pixels to class probabilities), or caching features of the "
        f"tuned network (`featstore extract --backbone finetune:{meta['run_id']}`). Not for classes "
        "outside the list, and not for decisions about people without a separate evaluation.",
        "",
        *_metric_lines(meta.get("metrics", {})),
        "",
        "## Limitations",
        "",
        "- Metrics come from one split of one dataset; small classes make them noisy.",
        "- Accuracy on images unlike the training set (other cameras, lighting, sizes) is unknown.",
        "- Probabilities are the network's own and may be over-confident.",
        "",
        *_finetune_cost_lines(meta),
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in sorted(meta.get("versions", {}).items())],
        "",
    ]
    return "\n".join(lines)
