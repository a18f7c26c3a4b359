"""A real HTTP server on 127.0.0.1 serving weight files the tests write, with faults on request."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

import featstore.backbones.weights as weights_mod
from featstore.backbones.applications import get_backbone, load_catalog


@dataclass
class Behaviour:
    """What the server does: `status` other than 200 answers that code; `stall_s` sends the
    headers and half the file, then sleeps; `hang` accepts and never answers; `ranges` False
    ignores Range headers; `bytes_per_s` throttles the body; `trickle_s` sends one byte every
    that many seconds; `declared_bytes` is the Content-Length claimed (a body of that size is sent
    as long as the client reads); `redirect_loop` answers 302 to the same address."""

    status: int = 200
    stall_s: float = 0.0
    hang: bool = False
    ranges: bool = True
    bytes_per_s: float | None = None
    trickle_s: float | None = None
    declared_bytes: int | None = None
    redirect_loop: bool = False
    requests: list[dict] = field(default_factory=list)


class WeightsServer:
    """`files` maps a URL path ("/w/file.h5") to bytes; `url(path)` is its address."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviour = Behaviour()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                b = server.behaviour
                path = self.path
                if path.startswith("http://"):  # asked as a proxy: serve the URL's path
                    path = "/" + path.split("/", 3)[3]
                b.requests.append(
                    {"path": path, "range": self.headers.get("Range"), "proxied": path != self.path}
                )
                if b.hang:
                    time.sleep(30)
                    return
                if b.status != 200:
                    self.send_error(b.status)
                    return
                if b.redirect_loop:
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.end_headers()
                    return
                if b.declared_bytes:
                    self._endless(b.declared_bytes)
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and b.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if b.trickle_s:
                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        time.sleep(b.trickle_s)
                    return
                if b.stall_s:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(b.stall_s)
                    return
                step = 1 << 14
                for i in range(0, len(body), step):
                    try:
                        self.wfile.write(body[i : i + step])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if b.bytes_per_s:
                        time.sleep(step / b.bytes_per_s)

            def _endless(self, declared: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                block = bytes(1 << 16)
                try:
                    for _ in range(0, declared, len(block)):
                        self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The http URL of `path` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5(data: bytes) -> str:
    """Hex md5 of `data`."""
    return hashlib.md5(data).hexdigest()


NAME = "mobilenet_v2"
FILE = get_backbone(NAME).weights_file


def payload(n_bytes: int = 300_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


def record(origin: str, data: bytes, algorithm: str | None = "md5") -> dict:
    """The catalog record of NAME for a test file: its own origin, size and hash."""
    digest = {"md5": md5(data), None: None}.get(algorithm)
    if algorithm == "sha256":
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
    return {"file": FILE, "origin": origin, "size": len(data), "hash": digest, "hash_algorithm": algorithm}


def register(monkeypatch, rec: dict) -> None:
    """Register `rec` as NAME's official weight file (the catalog file is left alone)."""
    catalog = json.loads(json.dumps(load_catalog()))
    catalog[NAME]["weights"] = rec
    monkeypatch.setattr(weights_mod, "load_catalog", lambda: catalog)
