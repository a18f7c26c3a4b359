"""Benchmark the store at scale: sharded sets and the stat cache against the single-file layout of
earlier versions, whole processes, side by side on the same data.

Run: `python bench/bench_scale.py [--images 100000] [--rows 1000000] [--work DIR] [--old SRC]`.

Section 1 (`--images`, real extraction): that many small PNGs (32 x 32, 10 class folders) are
written once; `featstore extract` with MobileNetV2 at 32 px (`--weights none`; the work does
not depend on the weights) runs as a whole process: first run, unchanged re-run, 10 images
added. Each step runs with this checkout and, with `--old SRC` (a checkout of an earlier
version, e.g. `git worktree add /tmp/old <commit>`), with that version on its own copy of the
images, alternating. Printed: wall seconds, MB written (the process's `wchar`: every byte it
wrote) and peak RSS.

Section 2 (`--rows`, synthetic): that many rows of 1 280 float32 features with real SHA-256
digests, written through the store's own writers (sharded: `commits.commit_rows`; single file:
`featuresets.write_feature_set`, what earlier versions wrote on every change): first write,
lookup of every digest (is it stored?), append 10 rows (`commits.append_rows`: no stored row
read; the single file is rewritten whole), 1 % of the rows dropped (files deleted: a full diff
against the stored rows), compaction, and `fit-head logistic` on every row streamed from the
shards (`--stream`, what it does without asking on a set beyond an eighth of the machine's
memory) and on a stratified sample of 200 000 rows. Each step is its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
D = 1280
#: A child prints its own peak RSS and bytes written on this line at exit.
PROBE = r"""
import atexit, json, resource, sys
def _probe():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("PROBE " + json.dumps({"rss_mb": rss, "written_mb": int(io["wchar"]) / 1e6}), file=sys.stderr)
atexit.register(_probe)
import runpy
sys.argv = sys.argv[1:]
if sys.argv[0] == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(args: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `python args...` as a whole process in `cwd` (not the checkout, so PYTHONPATH decides
    which featstore runs); return wall seconds, MB written, peak RSS MB."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or Path.home(),
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{out.stderr[-3000:]}")
    probe = next(json.loads(line[6:]) for line in out.stderr.splitlines() if line.startswith("PROBE "))
    return {
        "s": round(wall, 2),
        "written_mb": round(probe["written_mb"], 1),
        "rss_mb": round(probe["rss_mb"]),
        "stdout": out.stdout,
    }


def row(name: str, new: dict, old: dict | None) -> None:
    """Print one step: this version, the earlier layout, and the ratio of their times."""
    o = f"{old['s']:8.2f} s {old['written_mb']:9.1f} MB {old['rss_mb']:6d} MB" if old else " " * 34
    ratio = f"{old['s'] / new['s']:6.1f}x" if old and new["s"] else ""
    print(
        f"{name:<28}{new['s']:8.2f} s {new['written_mb']:9.1f} MB {new['rss_mb']:6d} MB   {o} {ratio}",
        flush=True,
    )


def header(what: str) -> None:
    print(f"\n{what}")
    print(f"{'step':<28}{'sharded: time':>10} {'written':>12} {'peak RSS':>9}   {'single file: time':>10}")


# ---------------------------------------------------------------- section 1: real images


def make_images(folder: Path, n: int, start: int = 0) -> None:
    """Write `n` 32 x 32 PNGs in 10 class folders, numbered from `start`."""
    from PIL import Image

    rng = np.random.default_rng(start)
    for c in range(10):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        px = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(px).save(folder / f"c{i % 10}" / f"{i:07d}.png", compress_level=1)


def old_path(src: Path, work: Path) -> Path:
    """A folder to put first on PYTHONPATH so `featstore` and `featstore_cli` come from `src`."""
    shim = work / "old-shim"
    shim.mkdir(parents=True, exist_ok=True)
    for name, target in (("featstore", src / "featstore"), ("featstore_cli", src / "cli")):
        link = shim / name
        if not link.exists():
            link.symlink_to(target)
    return shim


def section_images(n: int, work: Path, old_src: Path | None) -> None:
    data = {"new": work / "images-new", "old": work / "images-old"}
    if not (data["new"] / "c9").is_dir():
        log(f"writing {n} PNGs")
        make_images(data["new"], n)
    if old_src is not None and not (data["old"] / "c9").is_dir():
        shutil.copytree(data["new"], data["old"])
    for folder in data.values():  # images added by an earlier run of this bench go
        for p in folder.glob("c*/*.png"):
            if int(p.stem) >= n:
                p.unlink()
    # the files must be older than the stat cache's racy window, as any folder not just written
    time.sleep(2.5)
    versions = {"new": {}}
    if old_src is not None:
        versions["old"] = {"PYTHONPATH": str(old_path(old_src, work))}
    for v in versions:
        shutil.rmtree(work / f"store-{v}", ignore_errors=True)

    def extract(v: str) -> dict:
        args = ["-m", "featstore_cli", "extract", "--backbone", "mobilenet_v2", "--weights", "none"]
        args += ["--input-size", "32", "--data", str(data[v]), "--store", str(work / f"store-{v}")]
        return run([*args, "--no-emissions", "--quiet", "--name", "scale"], versions[v])

    header(f"{n} images, MobileNetV2 at 32 px, whole process")
    steps = [
        ("first extract", None),
        ("unchanged re-run", None),
        ("add 10 images", 10),
        ("unchanged re-run", None),
    ]
    for name, add in steps:
        got = {}
        for v in versions:
            if add:
                make_images(data[v], add, start=n)
            got[v] = extract(v)
        row(name, got["new"], got.get("old"))


# ---------------------------------------------------------------- section 2: synthetic rows


class Synthetic:
    """Features for row i: one of 4 096 fixed rows (5 learnable classes) plus i / 10^6; any
    number of rows, no memory."""

    def __init__(self, digests: list[str], start: int = 0):
        rng = np.random.default_rng(0)
        centers = rng.normal(size=(5, D)).astype(np.float32)
        self.base = centers[np.arange(4096) % 5] + rng.normal(scale=2.0, size=(4096, D)).astype(np.float32)
        self.index = {d: start + i for i, d in enumerate(digests)}

    def gather(self, keys: list[str], n_features: int, dtype: str) -> np.ndarray:
        idx = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        return (self.base[idx % 4096] + (idx / 1e6)[:, None]).astype(dtype)

    def __contains__(self, key: str) -> bool:
        return key in self.index


def synthetic_rows(start: int, n: int):
    from featstore.store.featuresets import FeatureRows

    digests = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(start, start + n)]
    i = np.arange(start, start + n)
    rows = FeatureRows(
        paths=[f"c{k % 5}/{k:08d}.png" for k in range(start, start + n)],
        labels=((i % 4096) % 5).astype(np.int32),
        digests=digests,
        split=[""] * n,
    )
    return rows, digests


ATTRS = {"class_names": [f"c{k}" for k in range(5)], "backbone": "synthetic", "backbone_digest": "s" * 64,
         "dataset": "big", "resize": "squash", "input_size": 32, "n_features": D, "dtype": "float32"}  # fmt: skip


def step(name: str, layout_kind: str, store: str, n: int) -> None:
    """One step of section 2, run in a child process."""
    from featstore.store import commits, shards
    from featstore.store.featuresets import FeatureSetReader, write_feature_set
    from featstore.store.layout import resolve_store
    from featstore.store.parts import FeatureSource

    layout = resolve_store(store)
    path = layout.feature_set("big@synthetic")
    if name == "write":
        rows, digests = synthetic_rows(0, n)
        src = Synthetic(digests)
        if layout_kind == "sharded":
            commits.commit_rows(path, rows, digests, src, ATTRS, None)
        else:
            write_feature_set(path, rows, src, D, "float32", ATTRS)
    elif name == "lookup":
        _, digests = synthetic_rows(0, n)
        reader = shards.open_set(path)
        with reader:
            stored = set(reader.digests_column().tolist())
        found = sum(d.encode() in stored for d in digests)
        assert found == n, found
    elif name == "append":
        if layout_kind == "sharded":  # the rows are new: append them, reading no stored row
            rows, digests = synthetic_rows(n, 10)
            manifest = shards.read_manifest(shards.set_folder(path))
            commits.append_rows(path, manifest, rows, digests, Synthetic(digests, start=n), ATTRS)
        else:
            rows, digests = synthetic_rows(0, n + 10)
            with FeatureSetReader(path) as reader:
                source = FeatureSource()
                source.add_reader(reader, reader.rows().digests)
                new = Synthetic(digests[n:], start=n)
                both = _Both(source, new)
                write_feature_set(path, rows, both, D, "float32", ATTRS)
    elif name == "drop":  # 1 % of the files deleted: rows dropped (sharded) or the file rewritten
        keep = np.arange(n + 10) % 100 != 7
        rows, digests = synthetic_rows(0, n + 10)
        rows = rows.take(np.flatnonzero(keep))
        digests = [d for d, k in zip(digests, keep, strict=True) if k]
        with shards.open_set(path) as reader:
            old_rows = reader.rows()
            stored = commits.StoredSet(old_rows, reader.attrs, old_rows.digests, reader.manifest, path)
            commits.commit_rows(path, rows, digests, Synthetic([]), ATTRS, stored)
    elif name == "compact":
        from featstore.store.maintenance import compact_feature_sets

        compact_feature_sets(layout)


class _Both:
    """A source reading stored rows from a feature set and new rows from `Synthetic`."""

    def __init__(self, stored, new: Synthetic):
        self.stored, self.new = stored, new

    def gather(self, keys, n_features, dtype):
        out = np.empty((len(keys), n_features), dtype=dtype)
        mine = np.array([k in self.new for k in keys])
        if (~mine).any():
            out[~mine] = self.stored.gather(
                [k for k, m in zip(keys, mine, strict=True) if not m], n_features, dtype
            )
        if mine.any():
            out[mine] = self.new.gather([k for k, m in zip(keys, mine, strict=True) if m], n_features, dtype)
        return out


def section_rows(n: int, work: Path) -> None:
    stores = {v: work / f"rows-{v}" for v in ("sharded", "single")}
    for s in stores.values():
        shutil.rmtree(s, ignore_errors=True)
    me = str(Path(__file__).resolve())
    header(f"{n} synthetic rows x {D} float32, the store's writers, each step its own process")

    def both(name: str, kinds=("sharded", "single")) -> None:
        got = {k: run([me, "step", name, k, str(stores[k]), str(n)]) for k in kinds}
        row(name, got["sharded"], got.get("single"))

    both("write")
    both("lookup")
    both("append")
    both("drop", kinds=("sharded",))
    both("compact", kinds=("sharded",))
    args = ["-m", "featstore_cli", "fit-head", "logistic", "--features", "big@synthetic", "--store"]
    args += [str(stores["sharded"]), "--no-emissions", "--quiet", "--json", "--C", "1"]
    sample = min(n, 200_000)
    for what, extra in [
        ("streamed", ["--stream"]),
        (f"{sample // 1000}k sample", ["--max-train-rows", str(sample)]),
    ]:
        got = run([*args, *extra])
        row(f"fit-head logistic {what}", got, None)
        result = json.loads(got["stdout"])
        print(f"  test accuracy {result['metrics']['test']['accuracy']:.4f}, fit {result['fit_seconds']} s")
    size = sum(p.stat().st_size for p in stores["sharded"].rglob("*") if p.is_file()) / 1e9
    print(f"(sharded store on disk: {size:.2f} GB)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "step":
        step(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/featstore-scale"))
    ap.add_argument("--old", type=Path, default=None, help="checkout of an earlier version to compare with")
    ap.add_argument("--skip", choices=("images", "rows"), default=None)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"featstore bench_scale: {os.cpu_count()} cores; work folder {a.work}")
    if a.skip != "images" and a.images:
        section_images(a.images, a.work, a.old)
    if a.skip != "rows" and a.rows:
        section_rows(a.rows, a.work)


if __name__ == "__main__":
    main()
