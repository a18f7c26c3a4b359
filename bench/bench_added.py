"""Benchmark `featstore backbones add` on real photos: a network exported the PyTorch way (NCHW
ONNX with a Hugging Face preprocessor config) and a user's plain `.keras` file, against the same
network computed by hand and against the built-in Keras application.

Run: `python bench/bench_added.py [--weights PATH_TO_NO_TOP_H5] [--data FLOWERS] [--n 4309]`

Both files are MobileNetV2 with ImageNet weights (`../shared/weights/`, else random weights with
a note): (1) `mnv2-nchw.onnx` takes `pixel_values` (N, 3, 224, 224) in [-1, 1], as an Optimum or
timm export does, with a `preprocessor_config.json` saying shortest edge 256, centre crop 224,
bicubic, mean and std 0.5 (DINOv2-style resizing); (2) `mnv2-plain.keras` holds the network with
no preprocessing layer, as a user saves it after training. Each is added, the photos extracted
through the store, and the stored features compared, image by image, with:
- by hand: Pillow resize and crop, numpy normalisation, ONNX Runtime (or Keras) on the file as
  given: the least cosine must be at least 0.999;
- for the `.keras` file, the built-in `mobilenet_v2` (same weights, same squash resize): the
  features must agree; and what the file gave before `backbones add` existed (raw 0-255 pixels
  into a network expecting [-1, 1]), which is what `--backbone FILE.keras` now refuses.
A logistic head (stratified 70/10/20, seed 0) on each feature set gives the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = (
    REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
FLOWERS = REPO.parent / "shared" / "data" / "flowers"
HF_CONFIG = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_files(folder: Path, weights: Path | None) -> tuple[Path, Path]:
    """Write the NCHW ONNX file and the plain .keras file of MobileNetV2."""
    import keras
    import tensorflow as tf
    import tf2onnx

    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=str(weights) if weights else None
    )
    plain = folder / "mnv2-plain.keras"
    base.save(plain)
    inputs = keras.Input((3, 224, 224), name="pixel_values")
    nchw = keras.Model(inputs, base(keras.layers.Permute((2, 3, 1))(inputs)))
    spec = [tf.TensorSpec((None, 3, 224, 224), tf.float32, name="pixel_values")]
    proto, _ = tf2onnx.convert.from_keras(nchw, input_signature=spec, opset=17)
    onnx_path = folder / "mnv2-nchw.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    return onnx_path, plain


def by_hand_hf(paths: list[Path], onnx_path: Path) -> np.ndarray:
    """Features the Hugging Face way, written out independently: shorter side to 256 (bicubic),
    centre 224, /255, (x - 0.5) / 0.5, NCHW, ONNX Runtime on the file as given."""
    import onnxruntime as ort
    from PIL import Image, ImageOps

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(paths), 64):
        batch = []
        for p in paths[start : start + 64]:
            with Image.open(p) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                w, h = img.size
                rw, rh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
                img = img.resize((rw, rh), Image.Resampling.BICUBIC)
                left, top = int(round((rw - 224) / 2)), int(round((rh - 224) / 2))
                x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255
            batch.append(((x - 0.5) / 0.5).transpose(2, 0, 1))
        out.append(session.run(None, {"pixel_values": np.stack(batch)})[0])
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    """Add both files, extract, compare, fit; print one line per comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS if WEIGHTS.is_file() else None)
    p.add_argument("--data", type=Path, default=FLOWERS)
    p.add_argument("--n", type=int, default=None, help="only N photos, evenly spread over the sorted list")
    args = p.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no photos at {args.data}")
    if args.weights is None:
        log("no ImageNet weights: random weights (the features still must agree; accuracies mean little)")
    from featstore import Store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["KERAS_HOME"] = str(tmp / "keras")
        data = args.data
        if args.n:
            data = tmp / "photos"
            files = sorted(f for f in args.data.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for f in files[:: max(1, len(files) // args.n)][: args.n]:
                (data / f.parent.name).mkdir(parents=True, exist_ok=True)
                (data / f.parent.name / f.name).symlink_to(f)
        store = Store(tmp / "store", emissions=False)
        if args.weights:
            from featstore.backbones.fetching import import_weights

            import_weights(str(args.weights), "mobilenet_v2", trust=True)
        log("building the two files")
        onnx_path, plain = build_files(tmp, args.weights)
        config = tmp / "preprocessor_config.json"
        config.write_text(json.dumps(HF_CONFIG))
        t0 = time.perf_counter()
        card = store.add_backbone("mnv2-nchw", onnx_path, config=str(config))
        log(f"added mnv2-nchw in {time.perf_counter() - t0:.1f} s: check cosine {card.cosine}")
        card_k = store.add_backbone("mnv2-keras", plain, preprocess="tf")
        log(f"added mnv2-keras: check cosine {card_k.cosine}")
        weights = "imagenet" if args.weights else "none"
        sets = {}
        for name, backbone, opts in (
            ("nchw", "mnv2-nchw", {}),
            ("keras", "mnv2-keras", {}),
            ("builtin", "mobilenet_v2", {"weights": weights}),
        ):
            t0 = time.perf_counter()
            r = store.extract(data, backbone, **opts)
            log(f"extracted {backbone}: {r.n_images} images, {time.perf_counter() - t0:.1f} s")
            sets[name] = r.feature_set
        fs = {k: store.feature_set(v) for k, v in sets.items()}
        root = Path(fs["nchw"].attrs["data_root"])
        paths = [root / p for p in fs["nchw"].paths]
        hand = by_hand_hf(paths, onnx_path)
        c = cosines(fs["nchw"].features, hand)
        print(
            f"NCHW ONNX + HF config ({fs['nchw'].attrs['resize']}) vs by hand: min cosine {c.min():.6f}, mean {c.mean():.6f}, {len(c)} photos"
        )
        order = {p: i for i, p in enumerate(fs["builtin"].paths)}
        idx = [order[p] for p in fs["keras"].paths]
        c = cosines(fs["keras"].features, fs["builtin"].features[idx])
        print(
            f".keras + --preprocess tf vs built-in mobilenet_v2: min cosine {c.min():.6f}, mean {c.mean():.6f}"
        )
        import keras

        from featstore.data.decode import decode_image

        model = keras.models.load_model(plain)
        sample = paths[:: max(1, len(paths) // 200)]
        px = np.stack([decode_image(p.read_bytes(), 224, "squash") for p in sample]).astype(np.float32)
        raw = model.predict(px, verbose=0)
        right = model.predict(px / 127.5 - 1, verbose=0)
        c = cosines(raw, right)
        print(
            f"the same .keras fed raw 0-255 pixels (no preprocessing): cosine to the right features {c.min():.2f}-{c.max():.2f} on {len(c)} photos"
        )
        for set_name in sets.values():
            [head] = store.fit_head("logistic", set_name)
            print(f"logistic on {set_name}: test accuracy {head.metrics['test']['accuracy']:.4f}")


if __name__ == "__main__":
    main()
