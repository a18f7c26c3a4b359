"""The rows of `bench_perf.py`'s tables for one backbone: Keras predict and the notebook way,
featstore's sessions at each precision and runtime of the device, and extract end to end, all
timed on the same pre-decoded images (`BackboneBench`)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_extract import SIZE_PX, fresh_store, log, timed

CPU_BATCH = 32


def features_pass(session, x: np.ndarray, batch: int) -> np.ndarray:
    """Run `x` through a featstore session in batches; return the features."""
    return np.concatenate([session.run(x[i : i + batch]) for i in range(0, len(x), batch)])


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest cosine similarity between matching rows of `a` and `b`."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return float(cos.min())


def run_extract(
    data: Path,
    backbone: str,
    store: Path,
    weights: str,
    precision: str = "fp32",
    device: str = "auto",
    runtime: str = "auto",
    name: str | None = None,
    **kw,
) -> tuple:
    """Call `featstore.extraction.job.extract`; return (ExtractResult, wall seconds, background load).
    `name` is the dataset's name in the store; `kw` are further `PrecisionOptions` fields
    (`recalibrate=True`)."""
    from featstore.backbones.options import BackboneOptions
    from featstore.extraction.job import extract
    from featstore.extraction.options import ExtractOptions
    from featstore.inference.options import InferenceOptions, PrecisionOptions
    from featstore.options import JobOptions

    return timed(
        extract,
        str(data),
        BackboneOptions(backbone, weights=weights, input_size=SIZE_PX),
        precision=PrecisionOptions(precision, **kw),
        inference=InferenceOptions(device=device, runtime=runtime),
        options=ExtractOptions(name=name),
        job=JobOptions(store=str(store), emissions=False),
    )


def compile_times(model: Path, inference_precision: str, cache: Path, repeats: int = 2) -> dict:
    """Seconds OpenVINO takes to read and compile `model` in a fresh process: without its model
    cache, filling it, and reading it back (best of `repeats` each), and the cache's size."""

    code = (
        "import sys\nfrom pathlib import Path\n"
        "from featstore.inference.openvino_runtime import open_openvino\n"
        "c = Path(sys.argv[3]) if sys.argv[3] else None\n"
        "print(open_openvino(sys.argv[1], 2, sys.argv[2], cache_dir=c).compile_s)\n"
    )

    def once(cache_dir: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", code, str(model), inference_precision, cache_dir],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.split()[-1])

    shutil.rmtree(cache, ignore_errors=True)
    no_cache = min(once("") for _ in range(repeats))
    fill = once(str(cache))
    hit = min(once(str(cache)) for _ in range(repeats))
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    shutil.rmtree(cache, ignore_errors=True)
    return {"no_cache_s": no_cache, "fill_s": fill, "cached_s": hit, "cache_mb": size / 1e6}


class BackboneBench:
    """The rows of one backbone's table: Keras predict, ONNX Runtime sessions at each precision
    of the device, and extract end to end, timed on the same pre-decoded images."""

    def __init__(self, name: str, weights: str, subset: Path, work: Path, backbones: Path):
        from featstore.backbones.export import ensure_backbone
        from featstore.backbones.options import BackboneOptions
        from featstore.backbones.recipes import resolve_recipe
        from featstore.data.scan import scan_dataset
        from featstore.inference.calibration import decode_sample
        from featstore.store.layout import resolve_store

        self.name, self.weights, self.subset, self.work, self.backbones = (
            name,
            weights,
            subset,
            work,
            backbones,
        )
        self.recipe = resolve_recipe(BackboneOptions(name, weights=weights, input_size=SIZE_PX))
        self.layout = resolve_store(fresh_store(work / f"x-{name}", backbones))
        self.exported, self.export_s, _ = timed(ensure_backbone, self.recipe, self.layout)
        self.ds = scan_dataset(subset)
        self.x = decode_sample(self.ds.name, self.ds.items, SIZE_PX, "squash", "pillow").pixels
        self.model = None

    def keras_row(self):
        """Keras model.predict on the pre-decoded images: (img/s, bg load, features, extra)."""
        feats, s, bg = timed(self.model.predict, self.x, batch_size=CPU_BATCH, verbose=0)
        return len(self.x) / s, bg, np.asarray(feats), {}

    def notebook_row(self):
        """The by-hand notebook way, end to end: `keras.utils.load_img` of each JPEG at the input
        size (bilinear, as extract resizes), stacked, then `model.predict` of the same network:
        (img/s, bg load, features, extra)."""
        from keras.utils import img_to_array, load_img

        seen: set[str] = set()
        paths = []  # each file once, as the other rows count identical files once
        for item in self.ds.items:
            digest = hashlib.sha256(Path(item.path).read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                paths.append(str(item.path))

        def by_hand():
            size = (SIZE_PX, SIZE_PX)
            x = np.stack(
                [img_to_array(load_img(p, target_size=size, interpolation="bilinear")) for p in paths]
            )
            return self.model.predict(x.astype(np.uint8), batch_size=CPU_BATCH, verbose=0)

        feats, s, bg = timed(by_hand)
        return len(paths) / s, bg, np.asarray(feats), {}

    def session_row(self, session, batch: int):
        """A row function running the images through a featstore session, `batch` at a time."""
        session.run(self.x[:batch])  # warm-up

        def row():
            feats, s, bg = timed(features_pass, session, self.x, batch)
            return len(self.x) / s, bg, feats, {}

        return row

    def extract_row(self, precision: str, device: str, runtime: str = "auto"):
        """A row function running extract end to end (JPEG -> HDF5) into a fresh store each round."""
        rounds = iter(range(1 << 30))

        def row():
            store = fresh_store(
                self.work / f"store-{self.name}-{precision}-{device}-{runtime}-{next(rounds)}", self.backbones
            )
            res, s, bg = run_extract(
                self.subset,
                self.name,
                store,
                self.weights,
                precision=precision,
                device=device,
                runtime=runtime,
            )
            extra = {"batch": res.batch_size, "profile": res.profile, "runtime": res.runtime}
            return res.n_computed / s, bg, None, extra

        return row

    def cpu_specs(self, r: dict) -> tuple[list, list]:
        """Session rows on the CPU: ORT fp32 and int8 (calibrated on 100 images, checked on 100
        others), and with OpenVINO f32, bf16 (where the CPU has it) and int8 (the same file)."""
        from featstore.inference import openvino_runtime as ovr
        from featstore.inference.options import PrecisionOptions
        from featstore.inference.precision import prepare_model
        from featstore.inference.runtimes import Target, open_model

        log(f"{self.name}: int8 model, calibrated on 100 of these images and checked on 100 others")
        opts = PrecisionOptions("int8", n_calibration=100, n_check=100)
        cpu = Target("cpu", "onnxruntime", "int8")
        int8, q_s, _ = timed(prepare_model, self.exported, opts, self.layout, cpu, dataset=self.ds)
        r["quantize_s"], r["int8_check"] = q_s, int8.check
        path = self.exported.path

        def row(model, runtime, **kw):
            return self.session_row(open_model(model, runtime, "cpu", **kw), CPU_BATCH)

        specs = [("ORT fp32 (CPU)", row(path, "onnxruntime"), CPU_BATCH)]
        runs = [("fp32", "cpu", "onnxruntime")]
        if ovr.installed():
            specs.append(("OpenVINO f32 (CPU)", row(path, "openvino"), CPU_BATCH))
            runs.append(("fp32", "cpu", "openvino"))
            if ovr.has_bf16():
                log(f"{self.name}: bf16 under OpenVINO, checked against fp32 on 100 images")
                bf16 = PrecisionOptions("bf16", n_check=100)
                ov = Target("cpu", "openvino", "bf16")
                v = prepare_model(self.exported, bf16, self.layout, ov, dataset=self.ds)
                r["bf16_check"] = v.check
                kw = {"precision": "bf16", "settings": v.settings}
                specs.append(("OpenVINO bf16 (CPU)", row(path, "openvino", **kw), CPU_BATCH))
                runs.append(("bf16", "cpu", "openvino"))
        specs.append(("ORT int8 (CPU)", row(int8.path, "onnxruntime", precision="int8"), CPU_BATCH))
        runs.append(("int8", "cpu", "onnxruntime"))
        if ovr.installed():
            ov8 = prepare_model(
                self.exported, opts, self.layout, Target("cpu", "openvino", "int8"), dataset=self.ds
            )
            r["openvino_int8_check"] = ov8.check
            what = "OpenVINO int8 (CPU, same QDQ file)"
            specs.append((what, row(int8.path, "openvino", precision="int8"), CPU_BATCH))
            runs.append(("int8", "cpu", "openvino"))
            r["openvino_compile"] = {
                "fp32": compile_times(path, "f32", self.work / f"ov-cache-{self.name}"),
                "int8": compile_times(int8.path, "f32", self.work / f"ov-cache-{self.name}"),
            }
        return specs, runs

    def gpu_specs(self, r: dict) -> tuple[list, list]:
        """ORT fp32 and fp16 (CUDA, batch probed) and TensorRT fp16 session rows."""
        from featstore.inference.devices import choose_batch_size
        from featstore.inference.onnxruntime_runtime import open_session
        from featstore.inference.options import PrecisionOptions
        from featstore.inference.precision import prepare_model
        from featstore.inference.runtimes import Target

        s32 = open_session(self.exported.path, "cuda")
        b = choose_batch_size(s32, SIZE_PX, len(self.x))
        fp16 = prepare_model(
            self.exported, PrecisionOptions("fp16"), self.layout, Target("cuda", "onnxruntime", "fp16")
        )
        t0 = time.perf_counter()
        trt = open_session(
            self.exported.path,
            "tensorrt",
            trt_cache_dir=self.layout.backbones / "trt-cache",
            precision="fp16",
            trt_prefix=f"{self.name}-fp16",
        )
        trt.run(self.x[:1])
        r["trt_build_s"] = time.perf_counter() - t0
        specs = [
            ("ORT fp32 (CUDA)", self.session_row(s32, b), b),
            ("ORT fp16 (CUDA, IO binding)", self.session_row(open_session(fp16.path, "cuda"), b), b),
            ("TensorRT fp16", self.session_row(trt, 64), 64),
        ]
        return specs, [("fp16", "cuda", "onnxruntime"), ("fp16", "tensorrt", "onnxruntime")]
