"""Build the GPU bench bundle here: the runtime, the models and the photos, in carryable pieces.

Runs on this machine (TensorFlow exports the backbones; pip downloads the wheels). Writes under
`.gpu/` (ignored through `.git/info/exclude`, which this script updates): `part0/`, `part1/`,
... (one piece of `bundle.tar.xz` and a copy of `manifest.json` each) and `build/` (downloads,
exports and the staging folder, never carried). Then checks that the pieces join back to the
archive's sha256 and prints what each device call carries against the 64 MiB limit.
See bundle.py for what the archive holds and README.md for the device calls.

    python bench/gpu/build_bundle.py                   # the full bundle (about 5 minutes)
    python bench/gpu/build_bundle.py --check-calls     # sizes of the calls for the tree as it is now
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bundle as bd  # noqa: E402 - the sibling module, found through the line above

REPO = HERE.parents[1]
ORT_REQUIREMENT = "onnxruntime-gpu==1.31.1"
EXTRA_WHEELS = ("simplejpeg==1.9.0",)
BACKBONES = ("resnet50", "mobilenet_v2", "vgg16", "efficientnet_b0")
FLOWERS = REPO.parent / "shared" / "data" / "flowers"
MOBILENET_V2_IMAGENET = (
    REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def ensure_ignored(root: Path) -> None:
    """Add `/<root>/` to .git/info/exclude (once) and check git now ignores a piece folder there:
    an unignored piece would travel in every call and break the 64 MiB limit. A `root`
    outside the repository travels in no call: nothing to do."""
    if not root.resolve().is_relative_to(REPO):
        return
    rel = root.resolve().relative_to(REPO)
    path = Path(
        subprocess.run(
            ["git", "rev-parse", "--git-path", "info/exclude"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    path = path if path.is_absolute() else REPO / path
    line = f"/{rel.as_posix()}/"
    text = path.read_text() if path.is_file() else ""
    if line not in text.splitlines():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
        log(f"added {line} to {path}")
    probe = rel / "part0" / "x"
    if subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode != 0:
        raise bd.BundleError(f"git does not ignore {probe}; pieces would travel in every call")


def download(requirement: str, dest: Path) -> Path:
    """`pip download` one cp312 manylinux x86-64 wheel into `dest` (kept between builds)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(dest.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, requirement], check=True)
    return sorted(dest.glob(f"{name}-{version}-*.whl"))[0]


def export_models(names: list[str], work: Path, weights: str = "none") -> dict[str, Path]:
    """Export each backbone with featstore (`weights`: none for random, or a weights file; its
    native input size) into a work store; return name -> ONNX file. TensorFlow is needed here,
    never on the device."""
    from featstore.backbones.export import ensure_backbone
    from featstore.backbones.options import BackboneOptions
    from featstore.backbones.recipes import resolve_recipe
    from featstore.store.layout import resolve_store

    layout = resolve_store(work / "store")
    out = {}
    for name in names:
        t0 = time.perf_counter()
        exported = ensure_backbone(resolve_recipe(BackboneOptions(name, weights=weights)), layout)
        out[name] = Path(exported.path)
        mib = out[name].stat().st_size / bd.MIB
        log(f"{name}: {out[name].name}, {mib:.1f} MiB ({time.perf_counter() - t0:.0f} s)")
    return out


def check_models(spec: str, work: Path) -> dict[str, Path]:
    """Models carried whole for the cosine check alone: `name=weights_file,...` (ImageNet
    weights give features at a realistic scale; random MobileNetV2 features are about 1e-10,
    under fp16's smallest number). Entries whose weights file is absent are left out."""
    out = {}
    for item in filter(None, spec.split(",")):
        name, _, weights = item.partition("=")
        if not Path(weights).is_file():
            log(f"no {weights}: the check model {name} is left out")
            continue
        backbone = name.removesuffix("_imagenet")
        out[name] = export_models([backbone], work, weights=weights)[backbone]
    return out


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest per-row cosine of two (n, d) arrays; NaN when a row is all zeros."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def stage_models(models: dict[str, Path], staging: Path, work: Path, check_fp16: bool, whole=()) -> dict:
    """Skeleton and redraw parameters of each model into `staging/models/` (models named in
    `whole` keep all their weights), the rebuilt model checked here (finite features, their
    scale against the export's, fp16 cosine on the CPU); returns models.json's content."""
    listing = {}
    rng = np.random.default_rng(7)
    for name, src in models.items():
        skeleton = staging / "models" / f"{name}.skeleton.onnx"
        keep_all = name in whole
        redraw = bd.slim_model(src, skeleton, key=name, min_values=2**62 if keep_all else bd.MIN_REDRAWN)
        rebuilt = work / "rebuilt" / f"{name}.onnx"
        bd.rebuild_model(skeleton, redraw, rebuilt)
        size = _input_size(src)
        x = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
        orig, new = bd.onnx_features(src, x), bd.onnx_features(rebuilt, x)
        if not np.all(np.isfinite(new)):
            raise bd.BundleError(f"{name}: the rebuilt model gives non-finite features")
        info = {
            "role": "check" if keep_all else "bench",
            "skeleton": skeleton.name,
            "redraw": redraw,
            "source_onnx": src.name,
            "source_sha256": bd.sha256_file(src),
            "source_mib": round(src.stat().st_size / bd.MIB, 1),
            "skeleton_kib": round(skeleton.stat().st_size / 1024, 1),
            "input_size": size,
            "n_features": int(new.shape[1]),
            "gflops": round(bd.count_flops(src) / 1e9, 4),
            "feature_norm": float(np.linalg.norm(new, axis=1).mean()),
            "feature_norm_ratio": round(float(np.linalg.norm(new) / max(np.linalg.norm(orig), 1e-30)), 3),
        }
        if check_fp16:
            from gpu_engines import fp16_model

            notes: dict = {}
            half = fp16_model(rebuilt, work / "rebuilt" / "fp16", notes)
            if notes:
                info["fp16_note"] = next(iter(notes.values()))
                log(f"{name}: {info['fp16_note']}")
            info["fp16_cpu_cosine_min"] = round(cosine_min(bd.onnx_features(half, x), new), 6)
        listing[name] = info
        log(
            f"{name}: skeleton {info['skeleton_kib']} KiB (export {info['source_mib']} MiB), "
            f"{info['gflops']} GFLOPs/image, feature norm {info['feature_norm']:.3g} "
            f"(x{info['feature_norm_ratio']} the export's)"
            + (f", fp16 cosine on the CPU {info['fp16_cpu_cosine_min']}" if check_fp16 else "")
        )
    (staging / "models" / "models.json").write_text(json.dumps(listing, indent=1))
    return listing


def _input_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[1].dim_value)


def stage_photos(src: Path, dest: Path, n: int) -> dict:
    """Copy `n` photos of `src`'s class folders into `dest`, taken in turn from each class
    (sorted names, so the same photos every time); return count and bytes."""
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    files = {
        c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for c in classes
    }
    picked, i = [], 0
    while len(picked) < n and any(i < len(v) for v in files.values()):
        for c in files:
            if i < len(files[c]) and len(picked) < n:
                picked.append(files[c][i])
        i += 1
    total = 0
    for f in picked:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / f.parent.name / f.name)
        total += f.stat().st_size
    return {
        "n": len(picked),
        "mib": round(total / bd.MIB, 1),
        "classes": [c.name for c in classes],
        "source": str(src),
    }


def make_archive(staging: Path, dest: Path, preset: int) -> Path:
    """tar `staging` (sorted names, fixed owner and time) and xz it (the xz tool on all cores
    when present, else Python's lzma)."""
    tar_path = dest.with_suffix("")
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(staging.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(staging).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    dest.unlink(missing_ok=True)
    if shutil.which("xz"):
        subprocess.run(["xz", "-T0", f"-{preset}", "-f", str(tar_path)], check=True)
    else:
        with open(tar_path, "rb") as f, lzma.open(dest, "wb", preset=preset) as g:
            shutil.copyfileobj(f, g, 4 * bd.MIB)
        tar_path.unlink()
    return dest


def tree_bytes() -> int:
    """Bytes of what every device call sends: tracked files plus untracked files git does not
    ignore (the carried piece comes on top)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    total = 0
    for name in filter(None, names):
        p = REPO / os.fsdecode(name)
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    shared = REPO / "shared"
    if shared.is_dir():
        total += sum(f.stat().st_size for f in shared.rglob("*") if f.is_file())
    return total


def call_table(manifest: dict) -> list[dict]:
    """One row per device call: what it carries and its total against CALL_LIMIT_MIB."""
    tree = tree_bytes()
    rows = []
    for p in manifest["pieces"]:
        total = tree + p["size"] + len(json.dumps(manifest))
        rows.append(
            {
                "call": p["index"] + 1,
                "carry": p["folder"],
                "piece_mib": round(p["size"] / bd.MIB, 2),
                "tree_mib": round(tree / bd.MIB, 2),
                "total_mib": round(total / bd.MIB, 2),
                "fits": total < bd.CALL_LIMIT_MIB * bd.MIB,
            }
        )
    return rows


def print_calls(manifest: dict) -> bool:
    rows = call_table(manifest)
    last = len(rows)
    for r in rows:
        what = (
            "probe + piece"
            if r["call"] == 1
            else ("piece + assemble + bench" if r["call"] == last else "piece")
        )
        log(
            f"call {r['call']}: carry {r['carry']}: piece {r['piece_mib']} MiB + tree {r['tree_mib']} MiB = "
            f"{r['total_mib']} MiB ({what}){'' if r['fits'] else '  OVER THE 64 MiB LIMIT'}"
        )
    return all(r["fits"] for r in rows)


def build(args) -> dict:
    root: Path = args.root
    work = root / "build"
    staging = work / "staging"
    ensure_ignored(root)
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "wheels").mkdir(parents=True)
    t0 = time.perf_counter()
    wheels = []
    ort_wheel = args.wheel or download(args.ort, work / "downloads")
    stored = staging / "wheels" / ort_wheel.name
    bd.repack_stored(ort_wheel, stored)
    n = bd.check_record(stored)
    wheels.append(
        {
            "name": ort_wheel.name,
            "pypi_sha256": bd.sha256_file(ort_wheel),
            "pypi_mib": round(ort_wheel.stat().st_size / bd.MIB, 1),
            "stored_sha256": bd.sha256_file(stored),
            "stored_mib": round(stored.stat().st_size / bd.MIB, 1),
            "files": n,
        }
    )
    log(f"{ort_wheel.name}: {wheels[-1]['pypi_mib']} MiB from PyPI, {n} files match RECORD after repacking")
    for req in () if args.wheel else args.extra_wheels:
        whl = download(req, work / "downloads")
        shutil.copy2(whl, staging / "wheels" / whl.name)
        wheels.append(
            {
                "name": whl.name,
                "pypi_sha256": bd.sha256_file(whl),
                "pypi_mib": round(whl.stat().st_size / bd.MIB, 2),
            }
        )
    if args.models_from:
        models = {p.stem: p for p in sorted(args.models_from.glob("*.onnx"))}
        whole: dict = {}
    else:
        models = export_models(args.backbones, work)
        whole = check_models(args.check_models, work)
    listing = stage_models({**models, **whole}, staging, work, args.check_fp16, whole=set(whole))
    photos = stage_photos(args.photos, staging / "photos", args.n_photos) if args.photos.is_dir() else None
    if photos is None:
        log(f"no photos: {args.photos} is absent (the bench then needs --photos on the device)")
    else:
        log(f"{photos['n']} photos, {photos['mib']} MiB, from {photos['source']}")
    archive = make_archive(staging, work / bd.ARCHIVE, args.xz_preset)
    log(f"{archive.name}: {archive.stat().st_size / bd.MIB:.1f} MiB")
    pieces = bd.split_file(archive, root, int(args.max_piece_mib * bd.MIB))
    manifest = {
        "format": bd.FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "archive": {"name": archive.name, "size": archive.stat().st_size, "sha256": bd.sha256_file(archive)},
        "pieces": pieces,
        "wheels": wheels,
        "models": {
            k: {kk: v[kk] for kk in ("gflops", "n_features", "input_size", "source_mib")}
            for k, v in listing.items()
        },
        "photos": photos,
        "max_piece_mib": args.max_piece_mib,
    }
    for p in pieces:
        (root / p["folder"].split("/", 1)[1] / bd.MANIFEST).write_text(json.dumps(manifest, indent=1))
    check = work / "joined.tar.xz"
    bd.join_pieces(manifest, root, check)
    check.unlink()
    if not args.keep_archive:
        archive.unlink()
    log(
        f"{len(pieces)} pieces join back to sha256 {manifest['archive']['sha256'][:16]}... ({time.perf_counter() - t0:.0f} s)"
    )
    (work / "report.json").write_text(json.dumps({**manifest, "calls": call_table(manifest)}, indent=1))
    return manifest


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO / ".gpu", help="where part0, part1, ... and build/ go")
    ap.add_argument("--ort", default=ORT_REQUIREMENT, help="the onnxruntime-gpu requirement to download")
    ap.add_argument("--extra-wheels", nargs="*", default=list(EXTRA_WHEELS))
    ap.add_argument("--wheel", type=Path, default=None, help="use this wheel instead of downloading (tests)")
    ap.add_argument("--backbones", type=lambda s: s.split(","), default=list(BACKBONES))
    ap.add_argument(
        "--models-from", type=Path, default=None, help="take <name>.onnx files here instead of exporting"
    )
    ap.add_argument(
        "--check-models",
        default=f"mobilenet_v2_imagenet={MOBILENET_V2_IMAGENET}",
        help="name=weights_file,...: models carried whole for the cosine check ('' for none)",
    )
    ap.add_argument("--photos", type=Path, default=FLOWERS)
    ap.add_argument("--n-photos", type=int, default=1000)
    ap.add_argument("--max-piece-mib", type=float, default=bd.MAX_PIECE_MIB)
    ap.add_argument("--xz-preset", type=int, default=6)
    ap.add_argument("--check-fp16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--keep-archive", action="store_true")
    ap.add_argument(
        "--check-calls", action="store_true", help="only print the calls of the bundle already built"
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = bd.find_manifest(args.root) if args.check_calls else build(args)
    except bd.BundleError as err:
        print(f"bundle error: {err}", file=sys.stderr)
        return 3
    return 0 if print_calls(manifest) else 4


if __name__ == "__main__":
    sys.exit(main())
