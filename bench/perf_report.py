"""The tables of bench_perf.py: one per backbone, the decode table, fp32 vs int8 heads, and the
targets of the issue each run checks. Plain text from the results dict (bench/results/perf.json).
"""

from __future__ import annotations

from bench_extract import SIZE_PX, table, verdict


def backbone_report(r: dict, repeats: int, limit: float | None) -> list[str]:
    """One backbone's table, its int8 check and its TensorRT build time."""
    rows = []
    for row in r["rows"]:
        cells = [row["what"], f"{row['ips']:.1f}", f"{row['vs_keras']:.2f}x"]
        cells += [f"{row['cos']:.4f}" if row.get("cos") is not None else "", str(row.get("batch") or "")]
        cells += [f"{row['bg']:.0%}", f"{row['cpu_ips']:.1f}", f"{row['cpu_vs_keras']:.2f}x"]
        if limit and r.get("gflops"):
            cells.append(f"{row['ips'] * r['gflops'] * 1e9 / limit:.0%}")
        rows.append(cells)
    head = ["what", "img/s", "vs Keras", "min cosine vs Keras", "batch", "bg load", "img/CPU-s", "vs Keras"]
    head += ["of card limit"] if limit else []
    title = (
        f"{r['backbone']} (weights {r['weights']}, {r['n_images']} images at {SIZE_PX} px, "
        f"{r['gflops']} GFLOPs/img, best of {repeats} rounds)"
    )
    out = [table(title, head, rows)]
    if r.get("int8_check"):
        c = r["int8_check"]
        acc = (
            f", logistic accuracy fp32 {100 * c['fp32_accuracy']:.1f} % vs int8 {100 * c['int8_accuracy']:.1f} %"
            if c.get("fp32_accuracy") is not None
            else ""
        )
        held = "held-out" if c.get("held_out") else "calibration (no images left over)"
        out.append(
            f"int8 check ({c['n_images']} {held} images): cosine mean {c['cosine_mean']:.4f}, min "
            f"{c['cosine_min']:.4f}{acc}; quantized in {r['quantize_s']:.0f} s\n"
        )
    if r.get("trt_build_s"):
        out.append(
            f"TensorRT engine build (first run): {r['trt_build_s']:.0f} s; later runs reuse the cache\n"
        )
    return out


def decode_report(d: dict) -> list[str]:
    """The decode table: milliseconds per image of each decoder, with and without the resize."""
    rows = [
        [
            k,
            f"{v['decode_ms']:.2f}",
            f"{v['decode_resize_ms']:.2f}",
            f"{v['resize_share']:.0%}",
            f"{v['bg']:.0%}",
        ]
        for k, v in d.items()
        if isinstance(v, dict)
    ]
    title = f"decode, one thread, {d['n_images']} JPEGs to {SIZE_PX} px (squash, bilinear)"
    out = [table(title, ["decoder", "decode ms/img", "+ resize ms/img", "resize share", "bg load"], rows)]
    if "identical_pixels_first_50" in d:
        out.append(
            f"simplejpeg pixels identical to Pillow's (first 50 images): {d['identical_pixels_first_50']}\n"
        )
    return out


def report(results: dict) -> str:
    """Render one table per backbone, the decode table, and the targets."""
    out = []
    for r in results["backbones"]:
        out += backbone_report(r, results["repeats"], results.get("matmul_flops"))
    if results.get("decode"):
        out += decode_report(results["decode"])
    for t in results["targets"]:
        out.append(
            f"target: {t['what']}: {t['value']:.2f} (>= {t['target']}) {verdict(t['value'], t['target'])}"
        )
    if results.get("accuracy"):
        out.append("")
        out.append(accuracy_report(results["accuracy"]))
    out.append("bg load: share of all cores busy with OTHER processes while measuring")
    out.append(
        "img/CPU-s: images per CPU-second used by this process (children included), less sensitive to "
        "other processes than img/s; its ratio estimates the wall ratio on an idle machine"
    )
    return "\n".join(out)


def targets(results: dict, gpu: bool) -> list[dict]:
    """The issue's targets that this run measured."""
    found = []
    for r in results["backbones"]:
        rows = {row["what"].split(" (")[0]: row for row in r["rows"]}
        if r["backbone"] != "resnet50":
            continue
        if not gpu:
            v = rows["extract int8 e2e"]["vs_keras"]
            found.append(dict(what="resnet50 e2e int8 extract / Keras predict (CPU)", value=v, target=3.0))
            v = rows["extract int8 e2e"]["cpu_vs_keras"]
            found.append(dict(what="the same per CPU-second of this process (info)", value=v, target=3.0))
        else:
            v = rows["TensorRT fp16"]["vs_keras"]
            found.append(dict(what="resnet50 TensorRT fp16 / Keras predict", value=v, target=3.0))
            if results.get("matmul_flops") and r.get("gflops"):
                frac = rows["TensorRT fp16"]["ips"] * r["gflops"] * 1e9 / results["matmul_flops"]
                found.append(
                    dict(what="resnet50 TensorRT fp16 share of the card's limit", value=frac, target=0.5)
                )
    return found


def accuracy_report(a: dict) -> str:
    """The fp32 vs int8 head table."""
    kinds = sorted(a["sets"]["fp32"]["test_accuracy"])
    rows = [
        [k]
        + [f"{100 * a['sets'][p]['test_accuracy'][k]:.2f} %" for p in ("fp32", "int8")]
        + [f"{100 * (a['sets']['int8']['test_accuracy'][k] - a['sets']['fp32']['test_accuracy'][k]):+.2f}"]
        for k in kinds
    ]
    f, q = a["sets"]["fp32"], a["sets"]["int8"]
    title = f"int8 vs fp32 features: test accuracy of every head, {f['n_images']} images of {a['data']} (mobilenet_v2, weights {a['weights']})"
    text = table(title, ["head", "fp32", "int8", "points"], rows)
    text += (
        f"best head: fp32 {100 * f['max_test_accuracy']:.2f} %, int8 {100 * q['max_test_accuracy']:.2f} % "
        f"(loss {a['loss_points']:+.2f} points; target <= 0.5) {verdict(0.5, a['loss_points'])}\n"
    )
    c = q.get("check") or {}
    if c:
        text += (
            f"extract's own check ({c['n_images']} images): cosine mean {c['cosine_mean']:.4f} (min "
            f"{c['cosine_min']:.4f}), logistic loss {c['accuracy_loss_points']} points; int8 model "
            f"calibrated on {q['calibration']['n_images']} images of {q['calibration']['dataset']}\n"
        )
    return text
