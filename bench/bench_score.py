"""Benchmark featstore scoring on CPU: score vs extract, cached vs uncached, Ray engine vs local.

Run from anywhere: `python bench/bench_score.py [--quick]`. Tables go to stdout, progress to
stderr, numbers to bench/results/score.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # before anything imports TensorFlow
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_WEIGHTS,
    REPO,
    fresh_store,
    log,
    machine_info,
    make_subset,
    make_synthetic,
    prepare_weights,
    table,
    timed,
    verdict,
)

RESULTS = REPO / "bench" / "results" / "score.json"
BATCH, SIZE_PX = 32, 224
TARGETS = {"score_vs_extract": 0.90, "cached_speedup": 20.0, "ray_vs_local": 0.80}


def split_subsets(data: Path, work: Path, n_eval: int, n_train: int) -> tuple[Path, Path, int, int]:
    """Two disjoint balanced subsets of `data`: images to score, and images to train the head on."""
    both, n_both = make_subset(data, work / "both", n_eval + n_train)
    train, evals = work / "train", work / "eval"
    n_tr = n_ev = 0
    for cls in sorted(p for p in both.iterdir() if p.is_dir()):
        files = sorted(cls.iterdir())
        k = round(len(files) * n_train / (n_eval + n_train))
        for dst, part in ((train, files[:k]), (evals, files[k:])):
            (dst / cls.name).mkdir(parents=True, exist_ok=True)
            for f in part:
                (dst / cls.name / f.name).symlink_to(f.resolve())
        n_tr, n_ev = n_tr + k, n_ev + len(files) - k
    return evals, train, n_ev, n_tr


def best_of(repeats: int, fn, *args, **kwargs) -> tuple:
    """Run `timed(fn, ...)` `repeats` times; return the fastest (result, seconds, background load)."""
    runs = [timed(fn, *args, **kwargs) for _ in range(repeats)]
    return min(runs, key=lambda r: r[1])


def bench(args: argparse.Namespace, data: Path, work: Path, weights: str) -> dict:
    """Run the three sections; return their figures."""
    from featstore import Store
    from featstore.inference.options import InferenceOptions
    from featstore.options import JobOptions
    from featstore.scoring.jobs import ScoreOptions, score

    evals, train, n_eval, n_train = split_subsets(data, work, args.n_images, args.n_train)
    backbones = work / "backbones"
    backbones.mkdir()
    head_store = fresh_store(work / "heads", backbones)
    common = dict(weights=weights, input_size=SIZE_PX, device="cpu", batch_size=BATCH)
    log(f"exporting mobilenet_v2 ({weights}) and extracting {n_train} training images")
    heads = Store(head_store, emissions=False)
    heads.extract(train, "mobilenet_v2", **common)
    heads.fit_head(
        "logistic", "train@mobilenet_v2" + ("" if weights == "imagenet" else "-random"), C=[1.0], name="bench"
    )
    r: dict = {"n_eval": n_eval, "n_train": n_train, "weights": weights, "repeats": args.repeats}
    outs = work / "out"
    outs.mkdir()
    n = [0]

    def run_extract(engine: str = "local"):
        n[0] += 1
        store = fresh_store(work / f"x{n[0]}", backbones)
        return Store(store, emissions=False).extract(evals, "mobilenet_v2", engine=engine, **common)

    def run_score(force: bool, engine: str = "local"):
        n[0] += 1
        options = ScoreOptions(str(evals), str(outs / f"p{n[0]}.parquet"), head="bench", force=force)
        return score(
            options,
            inference=InferenceOptions(device="cpu", batch_size=BATCH, engine=engine),
            job=JobOptions(store=str(head_store), emissions=False),
        )

    log(f"1. extract vs score (uncached), {n_eval} images, best of {args.repeats} each, interleaved")
    ext, sco = [], []
    for _ in range(args.repeats):
        ext.append(timed(run_extract))
        sco.append(timed(run_score, False))
    (x_res, r["extract_s"], r["extract_bg"]), (s_res, r["score_s"], r["score_bg"]) = (
        min(ext, key=lambda t: t[1]),
        min(sco, key=lambda t: t[1]),
    )
    assert x_res.n_images == n_eval and s_res.n_computed == n_eval, (x_res, s_res)
    r["score_vs_extract"] = r["extract_s"] / r["score_s"]

    log("2. cached scoring: the images extracted into the head's store first")
    heads.extract(evals, "mobilenet_v2", **common)
    c_res, r["cached_s"], r["cached_bg"] = best_of(args.repeats, run_score, False)
    assert c_res.n_cached == n_eval, c_res
    r["cached_speedup"] = r["score_s"] / r["cached_s"]
    f_res, r["forced_s"], r["forced_bg"] = timed(run_score, True)
    assert f_res.n_computed == n_eval

    if not args.no_ray:
        import ray

        log("3. Ray engine, local cluster of 2 CPUs (2 actors), against the local engine")
        _, r["ray_init_s"], _ = timed(
            ray.init, num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
        try:
            rx, r["ray_extract_s"], r["ray_extract_bg"] = best_of(args.repeats, run_extract, "ray")
            rs, r["ray_score_s"], r["ray_score_bg"] = best_of(args.repeats, run_score, True, "ray")
            assert rx.n_images == n_eval and rs.n_computed == n_eval
            r["ray_device"] = rx.device
        finally:
            ray.shutdown()
        r["ray_extract_vs_local"] = r["extract_s"] / r["ray_extract_s"]
        r["ray_score_vs_local"] = r["forced_s"] / r["ray_score_s"]
        r["ray_score_vs_local_with_start"] = r["forced_s"] / (r["ray_score_s"] + r["ray_init_s"])
    return r


def report(r: dict) -> str:
    """Render the section tables."""
    t, n = TARGETS, r["n_eval"]
    pct, f1 = "{:.0%}".format, "{:.1f}".format
    ips = lambda s: f1(n / s)  # noqa: E731
    s1 = [
        [
            "extract (features into a fresh store)",
            f"{r['extract_s']:.2f}",
            ips(r["extract_s"]),
            "",
            "",
            "",
            pct(r["extract_bg"]),
        ],
        [
            "score (backbone + head -> parquet)",
            f"{r['score_s']:.2f}",
            ips(r["score_s"]),
            pct(r["score_vs_extract"]),
            f">= {pct(t['score_vs_extract'])}",
            verdict(r["score_vs_extract"], t["score_vs_extract"]),
            pct(r["score_bg"]),
        ],
    ]
    s2 = [
        ["uncached", f"{r['score_s']:.2f}", ips(r["score_s"]), "1x", "", "", pct(r["score_bg"])],
        [
            "cached (features in the store)",
            f"{r['cached_s']:.3f}",
            ips(r["cached_s"]),
            f"{r['cached_speedup']:.1f}x",
            f">= {t['cached_speedup']:.0f}x",
            verdict(r["cached_speedup"], t["cached_speedup"]),
            pct(r["cached_bg"]),
        ],
    ]
    head = "run,seconds,img/s,ratio,target,result,bg load".split(",")
    out = [
        table(
            f"1. score vs extract, same backbone (mobilenet_v2, {SIZE_PX} px), {n} images, uncached", head, s1
        ),
        table(f"2. score of cached vs uncached images, {n} images", head, s2),
    ]
    if "ray_score_s" in r:
        s3 = [
            [
                "extract, local engine",
                f"{r['extract_s']:.2f}",
                ips(r["extract_s"]),
                "1",
                "",
                "",
                pct(r["extract_bg"]),
            ],
            [
                "extract, ray (2 actors)",
                f"{r['ray_extract_s']:.2f}",
                ips(r["ray_extract_s"]),
                pct(r["ray_extract_vs_local"]),
                f">= {pct(t['ray_vs_local'])}",
                verdict(r["ray_extract_vs_local"], t["ray_vs_local"]),
                pct(r["ray_extract_bg"]),
            ],
            [
                "score --force, local engine",
                f"{r['forced_s']:.2f}",
                ips(r["forced_s"]),
                "1",
                "",
                "",
                pct(r["forced_bg"]),
            ],
            [
                "score --force, ray (2 actors)",
                f"{r['ray_score_s']:.2f}",
                ips(r["ray_score_s"]),
                pct(r["ray_score_vs_local"]),
                f">= {pct(t['ray_vs_local'])}",
                verdict(r["ray_score_vs_local"], t["ray_vs_local"]),
                pct(r["ray_score_bg"]),
            ],
            [
                "  + cluster start, once",
                f"{r['ray_init_s']:.2f}",
                "",
                pct(r["ray_score_vs_local_with_start"]),
                "(info)",
                "",
                "",
            ],
        ]
        out.append(
            table(
                f"3. Ray engine ({r['ray_device']}, cluster of 2 CPUs) vs local engine, {n} images", head, s3
            )
        )
    out.append("ratio: images/s against the first row of the section (higher is better); seconds are the")
    out.append(f"fastest of {r['repeats']} runs. bg load: share of all cores busy with OTHER processes")
    out.append("(Ray's actors are not children of this process: their own work counts there too).")
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of class folders of JPEGs")
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS, help="holds the MobileNetV2 .h5")
    p.add_argument("--n-images", type=int, default=4000, help="images scored and extracted")
    p.add_argument("--n-train", type=int, default=300, help="other images the head is trained on")
    p.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the fastest counts")
    p.add_argument("--quick", action="store_true", help="smoke run: 96 images, 1 repeat")
    p.add_argument("--no-ray", action="store_true", help="skip section 3")
    return p.parse_args()


def main() -> None:
    """Run the benchmark."""
    args = parse_args()
    if args.quick:
        args.n_images, args.n_train, args.repeats = 96, 60, 1
    work = Path(tempfile.mkdtemp(prefix="featstore-bench-score-"))
    try:
        info, notes, data = machine_info(), [], args.data
        have_w = prepare_weights(args.weights_dir, work / "keras")
        if not data.is_dir():
            notes.append(f"{data} absent: using SYNTHETIC 256x192 JPEGs (smooth random images)")
            data = make_synthetic(work / "synthetic", args.n_images + args.n_train)
        weights = "imagenet" if have_w else "none"
        notes.append(f"mobilenet_v2: weights={weights!r}" + ("" if have_w else " (no ImageNet weights here)"))
        print(
            "\n".join(
                [
                    f"featstore scoring benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
                    f"machine: {info['cores']} cores ({info['cores_usable']} usable), {info['cpu']}, "
                    f"{info['mem_gib']} GiB",
                    f"python {info['python']}, onnxruntime {info['onnxruntime']}",
                    f"data: {data}; CPU, {SIZE_PX} px, batch {BATCH}; head: logistic on {args.n_train} other images",
                    *(f"note: {s}" for s in notes),
                    "",
                ]
            ),
            flush=True,
        )
        r = bench(args, data, work, weights)
        results = {"machine": info, "notes": notes, "targets": TARGETS, "results": r}
        print(report(r), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"numbers written to {RESULTS.relative_to(REPO)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
