"""Small file utilities: content hashes, atomic writes, locks, name claims."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from featstore.errors import FeatstoreError, StoreError, StoreLockedError

#: Bytes read at a time when hashing a file.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike, cached: bool = True, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file's bytes; with `cached`, a file this process hashed with the same size
    and mtime is not read again."""
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
    """Hold an flock on `lock_path`, waiting for another holder (`on_wait(pid)` is called once if
    there is one). The lock file stays: removing it would race other waiters."""
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def new_temp(folder: Path, name: str) -> Path:
    """Create an empty temporary file `.<name>.*.tmp` in `folder` with normal permissions."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file and a rename; StoreError for a full
    disk or file-size limit (`path` unchanged)."""
    tmp = new_temp(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise space_error(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, doc, indent: int | None = None) -> Path:
    """Write `doc` as JSON (`json_default` for featstore's values) to `path`, atomically, its folder
    made first; return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=indent, default=json_default).encode())
    return path


def space_error(err: OSError, path: Path) -> Exception:
    """A StoreError naming `path` when `err` is a full disk or a file-size limit, else `err`."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return StoreError(
            f"no space left to write {path} ({err.strerror}); the files written before are intact"
        )
    return err


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def file_lock(
    lock_path: Path,
    what: str,
    wait: bool = False,
    timeout_s: float | None = None,
    hint: str = "wait for it to finish, or pass --wait",
) -> Iterator[None]:
    """Hold an flock on `lock_path` while writing `what`; it goes with the process, so no lock is
    ever stale. StoreLockedError (ending with `hint`) when another process holds it and `wait`
    is False or `timeout_s` passed."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise StoreLockedError(
                        f"{what} is being written by another featstore process (pid {holder}); {hint}"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_held(lock_path: Path) -> bool:
    """True when a process holds the flock on `lock_path` right now."""
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim(path: Path, taken: type[FeatstoreError], message: str) -> Iterator[None]:
    """Claim the name `path` for a write that ends in a rename onto it: hold `.<name>.lock` beside
    it and raise `taken(message)` when `path` exists or another process holds the claim."""
    try:
        with file_lock(path.parent / f".{path.name}.lock", path.name):
            if path.exists():
                raise taken(message)
            yield
    except StoreLockedError:
        raise taken(message) from None


def json_default(value):
    """`json.dumps`'s `default`: paths as strings, numpy scalars as numbers, `to_dict` objects as
    dicts, anything else as `str`."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
