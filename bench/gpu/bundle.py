"""The GPU bench bundle: what travels to the device machine, in pieces, and how it is put back.

Used here by `build_bundle.py` (which makes the bundle) and there by `run_device.sh` (which
checks the pieces, reassembles and installs them); `tests/test_gpu_bundle.py` tests it.
Imports numpy and onnx only (never TensorFlow, never featstore), so it runs on the device.

The bundle is one xz-compressed tar holding:

- `wheels/`: onnxruntime-gpu (repacked without zip compression, so xz can shrink it: the same
  files, checked against the wheel's own RECORD hashes after the trip) and simplejpeg;
- `models/`: each ONNX backbone as a skeleton (its graph and small tensors) plus the mean and
  standard deviation of every large float tensor, redrawn there (see `regenerate`): the
  weights are random anyway, and leaving them out saves about 170 MB, three device calls;
- `photos/`: flower photos in class folders.

The archive is cut into pieces of equal size (at most `MAX_PIECE_MIB` each), one git-ignored
folder per piece (`.gpu/part0`, `.gpu/part1`, ...), each with a copy of `manifest.json`, so one
device call can carry one piece and any call can tell which pieces are there.

Command line (on either machine)::

    python bench/gpu/bundle.py status   --root .gpu
    python bench/gpu/bundle.py assemble --root .gpu --dest /tmp/gpu [--site /tmp/site]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np

MIB = 1 << 20
#: Largest piece: a device call carries at most 64 MiB, working tree included.
MAX_PIECE_MIB = 55
#: Everything one call may carry (the device tool's limit).
CALL_LIMIT_MIB = 64
ARCHIVE = "bundle.tar.xz"
MANIFEST = "manifest.json"
PIECE_PREFIX = "part"
#: Float tensors with at least this many values are redrawn on the device instead of carried.
MIN_REDRAWN = 4096
FORMAT = 1


class BundleError(Exception):
    """A piece is missing or damaged, or the bundle cannot be built or installed."""


def sha256_file(path: Path, chunk: int = 4 * MIB) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- pieces


def split_file(src: Path, root: Path, max_piece_bytes: int = MAX_PIECE_MIB * MIB) -> list[dict]:
    """Cut `src` into equal pieces of at most `max_piece_bytes`, piece i in `root/part<i>/`.

    Returns one dict per piece: index, folder (relative to `root`'s parent), file, size, sha256.
    Folders `root/part*` left from an earlier bundle are removed first.
    """
    size = src.stat().st_size
    n = max(1, math.ceil(size / max_piece_bytes))
    step = math.ceil(size / n)
    for old in root.glob(f"{PIECE_PREFIX}*"):
        shutil.rmtree(old)
    pieces = []
    with open(src, "rb") as f:
        for i in range(n):
            folder = root / f"{PIECE_PREFIX}{i}"
            folder.mkdir(parents=True)
            out = folder / f"{src.name}.{i:03d}"
            h, written = hashlib.sha256(), 0
            with open(out, "wb") as g:
                while written < step and (block := f.read(min(4 * MIB, step - written))):
                    g.write(block)
                    h.update(block)
                    written += len(block)
            pieces.append(
                {
                    "index": i,
                    "folder": f"{root.name}/{folder.name}",
                    "file": out.name,
                    "size": written,
                    "sha256": h.hexdigest(),
                }
            )
    return pieces


def piece_status(manifest: dict, root: Path) -> dict[str, list[int]]:
    """Which pieces of `manifest` are under `root`: {"ok": [...], "missing": [...], "bad": [...]}
    (bad: present with another size or sha256)."""
    status: dict[str, list[int]] = {"ok": [], "missing": [], "bad": []}
    for p in manifest["pieces"]:
        path = root / f"{PIECE_PREFIX}{p['index']}" / p["file"]
        if not path.is_file():
            status["missing"].append(p["index"])
        elif path.stat().st_size != p["size"] or sha256_file(path) != p["sha256"]:
            status["bad"].append(p["index"])
        else:
            status["ok"].append(p["index"])
    return status


def join_pieces(manifest: dict, root: Path, dest: Path) -> Path:
    """Concatenate the pieces under `root` into `dest` and check the archive's sha256.

    Raises
    ------
    BundleError
        A piece missing or damaged (by index and folder), or the joined archive's sha256 differs.
    """
    status = piece_status(manifest, root)
    if status["missing"] or status["bad"]:
        folders = [f"{root.name}/{PIECE_PREFIX}{i}" for i in status["missing"] + status["bad"]]
        raise BundleError(
            f"pieces missing {status['missing']} or damaged {status['bad']}: carry {', '.join(folders)} "
            "again (a machine given back between calls keeps none of them)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for p in manifest["pieces"]:
            with open(root / f"{PIECE_PREFIX}{p['index']}" / p["file"], "rb") as f:
                while block := f.read(4 * MIB):
                    out.write(block)
                    h.update(block)
    if h.hexdigest() != manifest["archive"]["sha256"]:
        raise BundleError(
            f"the joined {dest.name} has sha256 {h.hexdigest()}, not {manifest['archive']['sha256']}"
        )
    return dest


def find_manifest(root: Path) -> dict:
    """Read `manifest.json` from the first piece folder under `root` that has one."""
    for folder in sorted(root.glob(f"{PIECE_PREFIX}*")):
        path = folder / MANIFEST
        if path.is_file():
            return json.loads(path.read_text())
    raise BundleError(f"no {MANIFEST} under {root}/{PIECE_PREFIX}*: no piece of the bundle was carried here")


# --------------------------------------------------------------------------- wheels


def repack_stored(src: Path, dest: Path) -> None:
    """Write a copy of wheel `src` whose members are stored, not deflated (same names, same bytes
    per member, same order), so that xz can compress the whole bundle well."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.external_attr = info.external_attr
            copy.compress_type = zipfile.ZIP_STORED
            zout.writestr(copy, zin.read(info.filename))


def check_record(wheel: Path) -> int:
    """Check every member of `wheel` against the sha256 its RECORD file lists; return how many.

    Raises
    ------
    BundleError
        A member's hash or size differs from RECORD, or a listed member is missing.
    """
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        n = 0
        for row in csv.reader(io.StringIO(zf.read(record).decode())):
            if len(row) < 2 or not row[1]:
                continue
            name, digest = row[0], row[1]
            algo, _, want = digest.partition("=")
            try:
                data = zf.read(name)
            except KeyError as err:
                raise BundleError(f"{wheel.name}: {name} is listed in RECORD but missing") from err
            got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
            if got != want:
                raise BundleError(f"{wheel.name}: {name} differs from its RECORD hash")
            n += 1
    return n


# --------------------------------------------------------------------------- models


def _numpy_helper():
    from onnx import numpy_helper

    return numpy_helper


def slim_model(src: Path, skeleton: Path, key: str, min_values: int = MIN_REDRAWN) -> dict:
    """Write the skeleton of ONNX model `src` (every float32 tensor of at least `min_values`
    values left out) and return what `rebuild_model` needs: the model `key` that seeds the
    redraw, per left-out tensor its name, shape, mean and standard deviation, and the sha256
    of the redrawn weights."""
    import onnx

    nh = _numpy_helper()
    model = onnx.load(str(src))
    keep, params = [], []
    for init in model.graph.initializer:
        arr = nh.to_array(init)
        if arr.dtype == np.float32 and arr.size >= min_values:
            a = arr.astype(np.float64)
            params.append(
                {"name": init.name, "dims": list(arr.shape), "mean": float(a.mean()), "std": float(a.std())}
            )
        else:
            keep.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    skeleton.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(skeleton))
    return {"key": key, "tensors": params, "weights_sha256": weights_digest(key, params)}


def regenerate(key: str, param: dict) -> np.ndarray:
    """Redraw one left-out tensor: uniform values with the recorded mean and standard deviation,
    from a PCG64 stream seeded by the model `key` and the tensor's name. PCG64's raw stream is
    fixed across numpy versions, so both machines draw the same float32 values."""
    seed = int.from_bytes(hashlib.sha256(f"{key}/{param['name']}".encode()).digest()[:8], "little")
    n = int(np.prod(param["dims"], dtype=np.int64))
    raw = np.random.PCG64(seed).random_raw(n)
    u = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    half_width = param["std"] * math.sqrt(3.0)
    return (param["mean"] + half_width * (2.0 * u - 1.0)).astype(np.float32).reshape(param["dims"])


def weights_digest(key: str, params: list[dict]) -> str:
    """Hex SHA-256 of every redrawn tensor's bytes, in order (the same on both machines)."""
    h = hashlib.sha256()
    for p in params:
        h.update(regenerate(key, p).tobytes())
    return h.hexdigest()


def rebuild_model(skeleton: Path, meta: dict, out: Path) -> str:
    """Write the full model of `skeleton` to `out`, its left-out tensors redrawn; return the
    weights' sha256.

    Raises
    ------
    BundleError
        The redrawn weights differ from the ones `meta` recorded where the bundle was built.
    """
    import onnx

    nh = _numpy_helper()
    model = onnx.load(str(skeleton))
    h = hashlib.sha256()
    for p in meta["tensors"]:
        arr = regenerate(meta["key"], p)
        h.update(arr.tobytes())
        model.graph.initializer.append(nh.from_array(arr, p["name"]))
    if h.hexdigest() != meta["weights_sha256"]:
        raise BundleError(f"{skeleton.name}: redrawn weights differ from the bundle's ({h.hexdigest()[:12]})")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return h.hexdigest()


def count_flops(model_or_path) -> int:
    """Floating-point operations of one image through an ONNX model (2 per multiply-add): Conv
    (grouped and depthwise too), MatMul and Gemm, from shapes inferred at batch 1; elementwise
    operations, normalisation and pooling are not counted."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].Clear()
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and y and all(y):
                total += 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and y and all(y):
                k = a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]
                total += 2 * int(np.prod(y)) * int(k)
    return total


def _attr(node, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


def drop_duplicate_nodes(path: Path) -> int:
    """Remove exact duplicates of nodes from the ONNX model at `path` (in place); return how many.

    onnxruntime's fp16 converter inserts one identical `..._cast_to_fp32_node` per blocked
    consumer of a tensor, so a tensor read by two blocked nodes (the folded caffe preprocess
    of ResNet50 and VGG16) gets two nodes of one name and output, which no runtime loads.
    """
    import onnx

    model = onnx.load(str(path))
    seen, keep = set(), []
    for node in model.graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            keep.append(node)
    dropped = len(model.graph.node) - len(keep)
    if dropped:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        onnx.save(model, str(path))
    return dropped


def onnx_features(path: Path, pixels: np.ndarray, n_threads: int = 0) -> np.ndarray:
    """Run an ONNX backbone on the CPU: (N, S, S, 3) uint8 -> (N, D) float32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if n_threads:
        opts.intra_op_num_threads = n_threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = sess.run(None, {name: pixels})[0]
    return np.asarray(out, np.float32).reshape(len(pixels), -1)


# --------------------------------------------------------------------------- on the device


def assemble(root: Path, dest: Path, site: Path | None, log=print) -> dict:
    """Join and check the pieces under `root`, unpack the archive into `dest`, check the wheels
    against their RECORD, install them into `site` (pip --no-index --no-deps --target) and
    rebuild the models into `dest/models`. Returns what was done, with seconds per step."""
    manifest = find_manifest(root)
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    archive = join_pieces(manifest, root, dest / ARCHIVE)
    steps["join_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tarfile.open(archive, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    archive.unlink()
    steps["unpack_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wheels = sorted((dest / "wheels").glob("*.whl"))
    for whl in wheels:
        n = check_record(whl)
        log(f"{whl.name}: {n} files match RECORD")
    steps["record_s"] = time.perf_counter() - t0
    if site is not None and wheels:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        cmd += ["--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
        subprocess.run(cmd, check=True)
        steps["pip_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = json.loads((dest / "models" / "models.json").read_text())
    for name, info in models.items():
        rebuild_model(dest / "models" / info["skeleton"], info["redraw"], dest / "models" / f"{name}.onnx")
        log(f"rebuilt {name}.onnx (weights sha256 {info['redraw']['weights_sha256'][:12]})")
    steps["models_s"] = time.perf_counter() - t0
    return {"manifest": manifest, "steps": {k: round(v, 2) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    """`status`: say which pieces are here; `assemble`: join, check, unpack, install, rebuild."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("status", "assemble"))
    ap.add_argument("--root", type=Path, default=Path(".gpu"), help="folder holding part0, part1, ...")
    ap.add_argument("--dest", type=Path, default=Path("/tmp/gpu"), help="where assemble unpacks")
    ap.add_argument("--site", type=Path, default=None, help="pip --target folder for the wheels")
    args = ap.parse_args(argv)
    try:
        manifest = find_manifest(args.root)
        status = piece_status(manifest, args.root)
        n = len(manifest["pieces"])
        print(
            f"bundle {manifest['archive']['sha256'][:12]}: {len(status['ok'])} of {n} pieces here and intact",
            end="",
        )
        print(f"; missing {status['missing']}" if status["missing"] else "", end="")
        print(f"; damaged {status['bad']}" if status["bad"] else "")
        if args.command == "status":
            return 0
        done = assemble(args.root, args.dest, args.site)
        print(f"assembled into {args.dest}: {json.dumps(done['steps'])}")
        return 0
    except BundleError as err:
        print(f"bundle error: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
