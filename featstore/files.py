"""Small file utilities every layer may use: content hashes and an exclusive lock.

Imports nothing from featstore but `errors`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

#: Bytes read at a time when hashing a file.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike, cached: bool = True, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Return the hex SHA-256 of a file's bytes.

    With `cached`, a file already hashed by this process with the same size and mtime is not
    read again; `store verify` passes `cached=False` to read every byte.
    """
    if not cached:
        return _sha256_file.__wrapped__(str(path), 0, 0, chunk_bytes)
    st = os.stat(path)
    return _sha256_file(os.path.abspath(path), st.st_size, st.st_mtime_ns, chunk_bytes)


@functools.lru_cache(maxsize=256)
def _sha256_file(path: str, size: int, mtime_ns: int, chunk_bytes: int) -> str:
    return hash_file(path, ("sha256",), chunk_bytes)["sha256"]


def hash_file(
    path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256", "md5"), chunk_bytes: int = CHUNK_BYTES
) -> dict[str, str]:
    """Return `{algorithm: hex digest}` of a file's bytes, every algorithm in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, on_wait=None, poll_s: float = 0.2) -> Iterator[None]:
    """Hold an flock on `lock_path` (created if needed), waiting for another holder to let go.

    `on_wait(pid)` is called once when the lock is held by another process (its pid as it
    wrote it, or "?"). The lock file is left in place: removing it would race other waiters.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None and not told:
                    on_wait(os.pread(fd, 64, 0).decode(errors="replace").strip() or "?")
                    told = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
