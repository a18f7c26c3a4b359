"""Run logs and stores with known runs, for the report's tests: extract, fit-head and finetune
records with known seconds, energy and accuracies."""

from __future__ import annotations

from conftest import write_runs_store

from featstore.backbones.applications import load_catalog

CATALOG = load_catalog()
MNV2, VGG = CATALOG["mobilenet_v2"], CATALOG["vgg16"]
HEADER = (
    "| method | backbone | head | epochs | train acc | val acc | test acc | macro F1 | cv acc | cv std "
    "| test ECE | wall s | images/s "
    "| params | trainable | GFLOPs/image | kWh | kg CO2 | id |"
)


def recipe_of(label: str, **fields) -> dict:
    """The recipe a Keras application's label such as `vgg16-160px-random` stands for."""
    name, _, rest = label.partition("-")
    size = int(rest.split("px")[0]) if "px" in rest else CATALOG[name]["input_size"]
    weights = "none" if "random" in rest else "imagenet"
    recipe = {
        "kind": "registry",
        "name": name,
        "input_size": size,
        "weights": weights,
        "weights_sha256": None,
    }
    return {**recipe, "layer": None, "pooling": "avg", "source": None, "preprocess": "tf", **fields}


def extract_record(rid, fs, seconds, kwh, co2, n_computed=50, ips=None):
    dataset, backbone = fs.split("@")
    return {
        "recipe": recipe_of(backbone),
        "id": rid,
        "command": "extract",
        "dataset": dataset,
        "backbone": backbone,
        "feature_set": fs,
        "counts": {"n_computed": n_computed, "n_removed": 0},
        "seconds": seconds,
        "images_per_s": ips,
        "energy_kwh": kwh,
        "co2_kg": co2,
        "emissions": {"estimated": False},
    }


def fit_record(rid, head_id, sets, seconds, kwh, co2):
    return {
        "id": rid,
        "command": "fit-head",
        "head_id": head_id,
        "kind": head_id.split("-")[0],
        "feature_sets": sets,
        "seconds": seconds,
        "energy_kwh": kwh,
        "co2_kg": co2,
        "emissions": {"estimated": False if kwh is not None else None},
    }


def head_meta(kind, sets, dims, val, test, f1, n_classes=3, **config):
    return {
        "config": {"kind": kind, **config},
        "feature_sets": sets,
        "sources": [{"feature_set": s, "n_features": d} for s, d in zip(sets, dims, strict=True)],
        "class_names": [f"c{i}" for i in range(n_classes)],
        "metrics": {"val": {"accuracy": val}, "test": {"accuracy": test, "macro_f1": f1}},
        "predict_images_per_s": 5000.0,
    }


M, V, D = "flowers@mobilenet_v2", "flowers@vgg16", "digits@mobilenet_v2-96px-random"
FINETUNE = {
    "id": "ft-1",
    "command": "finetune",
    "method": "fine-tune",
    "dataset": "flowers",
    "backbone": "mobilenet_v2",
    "head": "dense",
    "epochs": 3,
    "metrics": {
        "train": {"accuracy": 0.99},
        "val": {"accuracy": 0.96},
        "test": {"accuracy": 0.97, "macro_f1": 0.965},
    },
    "params_total": 2261827,
    "params_trainable": 1865283,
    "gflops_per_image": MNV2["gflops"],
    "history": {
        "loss": [1.2, 0.6, 0.3],
        "val_loss": [1.0, 0.7, 0.5],
        "accuracy": [0.6, 0.85, 0.99],
        "val_accuracy": [0.7, 0.9, 0.96],
    },
    "seconds": 600.0,
    "images_per_s": 50.0,
    "energy_kwh": 0.05,
    "co2_kg": 0.01,
    "emissions": {"estimated": True},
}
SCRATCH = {
    "id": "sc-1",
    "command": "finetune",
    "method": "scratch",
    "dataset": "digits",
    "epochs": 20,
    "metrics": {"test": {"accuracy": 0.3, "macro_f1": 0.25}},
    "params_total": 1000,
    "params_trainable": 1000,
    "seconds": 60.0,
    "energy_kwh": 0.001,
    "co2_kg": 0.0002,
}


def known_store(root):
    """A hand-written store: extractions, heads, a re-run that reused everything, a --force
    re-extraction between two heads, a fine-tune and a scratch run, over two datasets."""
    runs = [
        extract_record("ex-m1", M, 100.0, 0.01, 0.002, ips=0.5),
        extract_record("ex-v", V, 300.0, 0.03, 0.006),
        extract_record("ex-m2", M, 1.0, 0.0, 0.0, n_computed=0),
        fit_record("fit-a", "logistic-a", [M], 2.0, 0.0001, 0.00002),
        fit_record("fit-b", "svm-b", [M, V], 3.0, 0.0002, 0.00004),
        extract_record("ex-m3", M, 120.0, 0.012, 0.0024),
        fit_record("fit-c", "knn-c", [M], 1.0, 0.00005, 0.00001),
        FINETUNE,
        extract_record("ex-d", D, 10.0, None, None),
        fit_record("fit-d", "dense-d", [D], 4.0, None, None),
        SCRATCH,
    ]
    for i, run in enumerate(runs):
        run["time"] = f"2026-01-01T00:00:{i:02d}+0000"
    heads = {
        "logistic-a": head_meta("logistic", [M], [1280], 0.85, 0.9, 0.89),
        "svm-b": head_meta("svm", [M, V], [1280, 512], 0.9, 0.95, 0.94),
        "knn-c": head_meta("knn", [M], [1280], 0.75, 0.8, 0.79),
        "dense-d": head_meta("dense", [D], [1280], 0.55, 0.5, 0.45, n_classes=10, hidden=[16]),
    }
    return write_runs_store(root, runs, heads)
