"""Weight downloads: featstore against Keras' own `get_file`, and how fast failures answer.

Serves a weight-sized file (random bytes, default 94.8 MB: ResNet50's no-top file) from a local
HTTP server on 127.0.0.1, registers it under its own md5 as mobilenet_v2's official file, and
downloads it, in one process, alternating rounds: featstore's `ensure_weights` (resumable
`.part`, md5 + sha256 checked, sidecar written) against `keras.utils.get_file` with the same
md5. Then times the error of each failing network: connection refused, an unresolvable host, a
server that never answers, and a transfer that stalls half way (with `--timeout-s`, default 30 s
as in featstore).

    python bench/bench_weights.py [--mb 94.8] [--rounds 3] [--timeout-s 30]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


class Server:
    """Serves `data` at /w/FILE; `mode` "ok", "hang" (never answers) or "stall" (half, then sleeps)."""

    def __init__(self, data: bytes):
        self.data, self.mode = data, "ok"
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                if outer.mode == "hang":
                    time.sleep(3600)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.data)))
                self.end_headers()
                body = memoryview(outer.data)
                end = len(body) // 2 if outer.mode == "stall" else len(body)
                for i in range(0, end, 1 << 20):
                    self.wfile.write(body[i : min(i + (1 << 20), end)])
                if outer.mode == "stall":
                    time.sleep(3600)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w/{FILE}"


def register(url: str, data: bytes) -> None:
    import featstore.backbones.weights as w
    from featstore.backbones.applications import load_catalog

    catalog = load_catalog()
    catalog["mobilenet_v2"]["weights"] = {
        "file": FILE,
        "origin": url,
        "size": len(data),
        "hash": hashlib.md5(data).hexdigest(),
        "hash_algorithm": "md5",
    }
    w.load_catalog = lambda: catalog


def time_featstore(home: Path) -> float:
    from featstore.backbones.fetching import ensure_weights

    os.environ["KERAS_HOME"] = str(home)
    t0 = time.perf_counter()
    status = ensure_weights("mobilenet_v2")
    assert status.state == "official"
    return time.perf_counter() - t0


def time_keras(url: str, data: bytes, home: Path) -> float:
    from keras.utils import get_file

    t0 = time.perf_counter()
    get_file(FILE, url, file_hash=hashlib.md5(data).hexdigest(), cache_dir=str(home), cache_subdir="models")
    return time.perf_counter() - t0


def time_error(url: str, timeout_s: float) -> tuple[float, str]:
    from featstore.backbones.fetching import ensure_weights
    from featstore.errors import WeightsError

    register(url, b"x")
    os.environ["KERAS_HOME"] = tempfile.mkdtemp()
    t0 = time.perf_counter()
    try:
        ensure_weights("mobilenet_v2", timeout_s=timeout_s)
    except WeightsError as err:
        return time.perf_counter() - t0, str(err).split("; ways out")[0]
    raise AssertionError("no error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=94.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args()
    os.environ.pop("FEATSTORE_OFFLINE", None)
    data = np.random.default_rng(0).integers(0, 256, int(args.mb * 1e6), dtype=np.uint8).tobytes()
    server = Server(data)
    register(server.url, data)
    rows = {"featstore": [], "keras get_file": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            rows["featstore"].append(time_featstore(Path(tmp) / f"f{r}"))
            rows["keras get_file"].append(time_keras(server.url, data, Path(tmp) / f"k{r}"))
    mb = len(data) / 1e6
    print(f"download of {mb:.1f} MB from 127.0.0.1, best of {args.rounds} alternating rounds:")
    best = {k: min(v) for k, v in rows.items()}
    for k, s in best.items():
        print(f"  {k:15s} {s:6.2f} s  {mb / s:7.1f} MB/s")
    print(f"  featstore / keras speed: {best['keras get_file'] / best['featstore']:.2f}x")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/w/{FILE}"
    failures = [("connection refused", refused), ("unresolvable host", f"http://weights.invalid/w/{FILE}")]
    server.mode = "hang"
    failures.append(("server never answers", server.url))
    results = [(name, *time_error(url, args.timeout_s)) for name, url in failures]
    server.mode = "stall"
    results.append(("transfer stalls half way", *time_error(server.url, args.timeout_s)))
    print(f"time to the error (timeout {args.timeout_s:g} s):")
    for name, seconds, message in results:
        print(f"  {name:26s} {seconds:6.2f} s  {message}")
    print(json.dumps({"download_s": best, "errors_s": {n: round(s, 3) for n, s, _ in results}}))


if __name__ == "__main__":
    main()
