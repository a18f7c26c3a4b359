"""The tables of bench_perf.py: one per backbone (runtimes and precisions side by side, their
checks against fp32, OpenVINO's compile times), the decode table, fp32 vs int8 and bf16 heads,
and the targets of the issues each run checks. Plain text from the results dict
(bench/results/perf.json).
"""

from __future__ import annotations

from bench_extract import SIZE_PX, table, verdict


def check_line(name: str, c: dict, extra: str = "") -> str:
    """One line of a precision's check against fp32: cosine, logistic accuracy, speeds."""
    p = name.split()[0]
    acc = (
        f", logistic accuracy fp32 {100 * c['fp32_accuracy']:.1f} % vs {p} {100 * c[f'{p}_accuracy']:.1f} %"
        if c.get("fp32_accuracy") is not None
        else ""
    )
    held = "held-out" if c.get("held_out") else "calibration (no images left over)"
    speeds = ", ".join(f"{k} {v:.1f}" for k, v in (c.get("speeds") or {}).items() if v)
    return (
        f"{name} check ({c['n_images']} {held} images): cosine mean {c['cosine_mean']:.4f}, min "
        f"{c['cosine_min']:.4f}{acc}; images/s {speeds}{extra}\n"
    )


def compile_line(r: dict) -> str:
    """OpenVINO's compile seconds without and with its model cache, per model file."""
    parts = [
        f"{k} {v['no_cache_s']:.2f} s uncached, {v['fill_s']:.2f} s filling, {v['cached_s']:.2f} s "
        f"from the cache ({v['cache_mb']:.0f} MB)"
        for k, v in r["openvino_compile"].items()
    ]
    return "OpenVINO read + compile, fresh process: " + "; ".join(parts) + "\n"


def backbone_report(r: dict, repeats: int, limit: float | None) -> list[str]:
    """One backbone's table, its checks against fp32, OpenVINO's compile times and the
    TensorRT build time."""
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
        out.append(
            check_line("int8 (onnxruntime)", r["int8_check"], f"; quantized in {r['quantize_s']:.0f} s")
        )
    if r.get("openvino_int8_check"):
        out.append(check_line("int8 (openvino)", r["openvino_int8_check"]))
    if r.get("bf16_check"):
        out.append(check_line("bf16 (openvino)", r["bf16_check"]))
    if r.get("openvino_compile"):
        out.append(compile_line(r))
    e2e = [row for row in r["rows"] if row["what"].startswith("extract") and row.get("profile")]
    for row in e2e:
        b = row["profile"].get("bottleneck") or {}
        if b:
            out.append(f"{row['what']}: bottleneck {b['stage']} ({b['share_of_wall']:.0%} of the loop)")
    if e2e:
        out.append("")
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


def _rows(r: dict) -> dict:
    """A backbone's rows by their name up to the first parenthesis (extract rows with runtime)."""
    out = {}
    for row in r["rows"]:
        what = row["what"]
        if what.startswith("extract"):
            # "extract bf16 e2e (cpu, openvino, JPEG -> HDF5)" -> "extract bf16 e2e openvino"
            inside = what.split("(", 1)[1].split(",")
            what = f"{what.split(' (')[0]} {inside[1].strip()}" if len(inside) > 2 else what.split(" (")[0]
        else:
            what = what.split(" (")[0]
        out[what] = row
    return out


def _cpu_targets(r: dict, rows: dict) -> list[dict]:
    """The CPU targets one backbone's rows measure."""
    name, found = r["backbone"], []
    bf16_target = {"mobilenet_v2": 1.8, "resnet50": 4.0}.get(name)
    e2e_target = {"mobilenet_v2": 3.0, "resnet50": 8.0}.get(name)
    if "OpenVINO bf16" in rows and bf16_target:
        v = rows["OpenVINO bf16"]["ips"] / rows["ORT fp32"]["ips"]
        found.append(dict(what=f"{name} OpenVINO bf16 / ORT fp32 (raw)", value=v, target=bf16_target))
        v = rows["OpenVINO bf16"]["cpu_ips"] / rows["ORT fp32"]["cpu_ips"]
        found.append(dict(what="the same per CPU-second of this process (info)", value=v, target=bf16_target))
    if "OpenVINO int8" in rows:
        v = rows["OpenVINO int8"]["ips"] / rows["ORT int8"]["ips"]
        found.append(dict(what=f"{name} OpenVINO int8 / ORT int8, same file (raw)", value=v, target=1.3))
    notebook = rows.get("Keras notebook e2e")
    if "extract bf16 e2e openvino" in rows and e2e_target and notebook:
        e2e = rows["extract bf16 e2e openvino"]
        v = e2e["ips"] / notebook["ips"]
        found.append(dict(what=f"{name} e2e bf16 extract / the notebook way", value=v, target=e2e_target))
        v = e2e["cpu_ips"] / notebook["cpu_ips"]
        found.append(dict(what="the same per CPU-second of this process (info)", value=v, target=e2e_target))
        v = e2e["vs_keras"]
        found.append(
            dict(
                what=f"{name} e2e bf16 extract / Keras predict on pre-decoded pixels (info)",
                value=v,
                target=e2e_target,
            )
        )
    if name == "resnet50" and "extract int8 e2e onnxruntime" in rows and notebook:
        v = rows["extract int8 e2e onnxruntime"]["ips"] / notebook["ips"]
        found.append(
            dict(what="resnet50 e2e int8 (onnxruntime) extract / the notebook way", value=v, target=3.0)
        )
    return found


def targets(results: dict, gpu: bool) -> list[dict]:
    """The issues' targets that this run measured."""
    found = []
    for r in results["backbones"]:
        rows = _rows(r)
        if not gpu:
            found += _cpu_targets(r, rows)
        elif r["backbone"] == "resnet50":
            v = rows["TensorRT fp16"]["vs_keras"]
            found.append(dict(what="resnet50 TensorRT fp16 / Keras predict", value=v, target=3.0))
            if results.get("matmul_flops") and r.get("gflops"):
                frac = rows["TensorRT fp16"]["ips"] * r["gflops"] * 1e9 / results["matmul_flops"]
                found.append(
                    dict(what="resnet50 TensorRT fp16 share of the card's limit", value=frac, target=0.5)
                )
    return found


def accuracy_report(a: dict) -> str:
    """The fp32 vs int8 and bf16 head table."""
    sets = list(a["sets"])
    kinds = sorted(a["sets"]["fp32"]["test_accuracy"])
    rows = [[k] + [f"{100 * a['sets'][p]['test_accuracy'][k]:.2f} %" for p in sets] for k in kinds]
    f = a["sets"]["fp32"]
    title = (
        f"test accuracy of every head on {' / '.join(sets)} features, {f['n_images']} images of "
        f"{a['data']} (mobilenet_v2, weights {a['weights']})"
    )
    text = table(title, ["head", *sets], rows)
    for label, loss in a["loss_points"].items():
        target = 0.2 if label == "bf16" else 0.5
        q = a["sets"][label]
        text += (
            f"best head: fp32 {100 * f['max_test_accuracy']:.2f} %, {label} {100 * q['max_test_accuracy']:.2f} % "
            f"(loss {loss:+.2f} points; target <= {target}) {verdict(target, loss)}\n"
        )
    for label in sets[1:]:
        q = a["sets"][label]
        c = q.get("check") or {}
        if c and c.get("accuracy_loss_points") is not None:
            cal = q.get("calibration") or {}
            made = f"; calibrated on {cal['n_images']} images of {cal['dataset']}" if cal else ""
            text += (
                f"extract's own {label} check ({c['n_images']} images): cosine mean {c['cosine_mean']:.4f} "
                f"(min {c['cosine_min']:.4f}), logistic loss {c['accuracy_loss_points']} points{made}\n"
            )
    return text
