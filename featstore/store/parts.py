"""Work in progress of a feature set: a small HDF5 part file per computed batch, written
atomically, so a killed run loses at most one batch; `FeatureSource` reads from the feature set
and the parts; `guarded_h5` turns a full disk into a `StoreError`."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featstore.errors import StoreError
from featstore.files import fsync_dir, new_temp


def _h5():
    import h5py

    return h5py


class _GuardedFile(io.RawIOBase):
    """A file for h5py that never lets a failed write reach HDF5 (which would crash the process):
    the first OSError is kept, later writes dropped, and `guarded_h5` raises it after closing."""

    def __init__(self, path: Path):
        super().__init__()
        self._f = open(path, "w+b")  # noqa: SIM115 - closed by guarded_h5
        self.error: OSError | None = None

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer) -> int:
        return self._f.readinto(buffer)

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self._f.write(data)
            except OSError as err:
                self.error = err
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._f.truncate(size)
        except OSError as err:
            self.error = self.error or err
            return size or 0

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as err:
            self.error = self.error or err

    def finish(self) -> None:
        """Flush, fsync and close the real file; raise the first write error, if any."""
        try:
            if self.error is None:
                self._f.flush()
                os.fsync(self._f.fileno())
        except OSError as err:
            self.error = err
        finally:
            self._f.close()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def guarded_h5(tmp: Path, final: Path, what: str, before_replace=None) -> Iterator:
    """Yield an h5py File writing `tmp`, fsynced and renamed to `final` on success; StoreError for
    a full disk or file-size limit (`tmp` removed, `final` untouched)."""
    h5py = _h5()
    guard = _GuardedFile(tmp)
    try:
        with h5py.File(guard, "w") as f:
            yield f
        guard.finish()
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        with contextlib.suppress(Exception):
            guard.finish()
        Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise StoreError(f"no space left to write {final} ({err.strerror}); {what}") from err
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            guard.finish()
        Path(tmp).unlink(missing_ok=True)
        raise


class FeatureSource:
    """Where each cache key's features can be read: an open feature set and part files (at most
    `max_open` open at once). A key is an image's content digest, or for an augmented view a
    key derived from the digest, the view and the augmentation config."""

    def __init__(self, max_open: int = 32):
        self._where: dict[str, tuple[int, int]] = {}
        self._pinned: dict[int, object] = {}
        self._paths: dict[int, Path] = {}
        self._open: OrderedDict[int, object] = OrderedDict()
        self._n = 0
        self.max_open = max_open

    def _register(self, digests: list[str]) -> int:
        sid = self._n
        self._n += 1
        for row, d in enumerate(digests):
            self._where.setdefault(d, (sid, row))
        return sid

    def add_reader(self, reader, digests: list[str]) -> None:
        """Make every row of an open `FeatureSetReader` available (kept open until `close`)."""
        self._pinned[self._register(digests)] = reader

    def add_path(self, path: Path, digests: list[str]) -> None:
        """Make the rows of an HDF5 file with a `features` dataset available (opened lazily)."""
        self._paths[self._register(digests)] = path

    def digests(self) -> list[str]:
        """Every digest some source provides."""
        return list(self._where)

    def __contains__(self, digest: str) -> bool:
        return digest in self._where

    def source_of(self, digest: str) -> int:
        """Index of the source (in the order added) that provides `digest`."""
        return self._where[digest][0]

    def _features(self, sid: int):
        if sid in self._pinned:
            return self._pinned[sid].features_dataset
        if sid not in self._open:
            if len(self._open) >= self.max_open:
                _, oldest = self._open.popitem(last=False)
                oldest.close()
            self._open[sid] = _h5().File(self._paths[sid], "r")
        self._open.move_to_end(sid)
        return self._open[sid]["features"]

    def gather(self, digests: list[str], n_features: int, dtype: str) -> np.ndarray:
        """Return features for `digests`, (len(digests), n_features) in `dtype`."""
        out = np.empty((len(digests), n_features), dtype=dtype)
        by_source: dict[int, list[tuple[int, int]]] = {}
        for i, d in enumerate(digests):
            sid, row = self._where[d]
            by_source.setdefault(sid, []).append((row, i))
        for sid, pairs in by_source.items():
            rows = np.array([r for r, _ in pairs])
            order = np.argsort(rows, kind="stable")
            uniq, inverse = np.unique(rows[order], return_inverse=True)
            block = self._features(sid)[uniq]
            dest = np.array([i for _, i in pairs])[order]
            out[dest] = block[inverse]
        return out

    def close(self) -> None:
        """Close every file this source opened or was given."""
        for f in [*self._open.values(), *self._pinned.values()]:
            with contextlib.suppress(Exception):
                f.close()
        self._open.clear()
        self._pinned.clear()


def parts_dir(path: Path) -> Path:
    """The folder of in-progress parts for feature set file `path`."""
    return path.with_suffix(".parts")


class PartWriter:
    """Writes computed batches as small HDF5 files, each atomically: a killed run loses at most
    the batch being written."""

    def __init__(self, folder: Path, cache_tag: str, dtype: str):
        self.folder = folder
        self.cache_tag = cache_tag
        self.dtype = dtype
        self.output_paths: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem.split("-")[1]) for p in folder.glob("part-*.h5") if p.stem[5:].isdigit()]
        self._next = max(existing, default=-1) + 1

    def write(self, digests: list[str], features: np.ndarray) -> Path:
        """Write one batch: cache keys `digests` (n,) and `features` (n, D); return the part's path."""
        path = self.folder / f"part-{self._next:06d}.h5"
        self._next += 1
        with guarded_h5(new_temp(self.folder, "part"), path, "stored data is intact") as f:
            f.create_dataset("features", data=features.astype(self.dtype), fletcher32=True, chunks=True)
            f.create_dataset("digests", data=np.array([d.encode() for d in digests], dtype="S64"))
            f.attrs["cache_tag"] = self.cache_tag
            f.attrs["dtype"] = self.dtype
        self.output_paths.append(path)
        return path


def read_parts(folder: Path, cache_tag: str, dtype: str, source: FeatureSource) -> int:
    """Add the usable parts in `folder` to `source`; delete unusable ones; return rows added."""
    if not folder.is_dir():
        return 0
    h5py = _h5()
    n = 0
    for tmp in folder.glob(".part.*.tmp"):
        tmp.unlink(missing_ok=True)
    for path in sorted(folder.glob("part-*.h5")):
        try:
            with h5py.File(path, "r") as f:
                ok = f.attrs.get("cache_tag") == cache_tag and f.attrs.get("dtype") == dtype
                digests = [d.decode() for d in f["digests"][...]] if ok else []
        except (OSError, KeyError):
            ok = False
        if not ok:
            path.unlink(missing_ok=True)
            continue
        source.add_path(path, digests)
        n += len(digests)
    return n


def has_parts(folder: Path) -> bool:
    """True when `folder` holds parts of an unfinished run."""
    return folder.is_dir() and any(folder.glob("part-*.h5"))


def clear_parts(folder: Path) -> None:
    """Delete a parts folder and everything in it."""
    if folder.is_dir():
        for p in folder.iterdir():
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
