"""The stat cache of a data root: (relative path, size, mtime_ns, ctime_ns, inode) -> the file's
content digest, so an unchanged folder costs a directory scan, not a read of every image.

An entry is trusted only when every stat field matches and the file's mtime is safely older
than the moment it was hashed (git's racy-timestamp rule): a file written in the same instant
as it was hashed may change again within one timestamp tick, so it is hashed again next run.
The cache is an SQLite file under the store (`statcache/<root digest>.sqlite`), updated row by
row in one transaction; a damaged or unwritable cache is set aside, never a failed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from featstore.store.layout import StoreLayout

#: An entry whose mtime is less than this before its hashing is racy (filesystems with 2 s
#: timestamps included).
RACY_NS = 2_000_000_000
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (rel BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
    "ctime_ns INTEGER, inode INTEGER, digest TEXT, hashed_ns INTEGER)"
)

Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def _encode(rel: str) -> bytes:
    """A relative path as bytes (file names that are not UTF-8 kept as they were)."""
    return rel.encode("utf-8", "surrogateescape")


def _decode(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def cache_path(layout: StoreLayout, root: str | os.PathLike) -> Path:
    """The stat cache file of data root `root` in the store."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(root))).hexdigest()[:20]
    return layout.root / "statcache" / f"{key}.sqlite"


def stat_of(path: str | os.PathLike) -> Stat | None:
    """(size, mtime_ns, ctime_ns, inode) of the file at `path` (links followed); None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


class StatCache:
    """The stat cache of one data root. `lookup(items)` stats each file and returns the digests
    it can trust; `remember(hashed)` records the digests a run computed, with the stats taken
    before they were read."""

    def __init__(self, path: Path, rehash: bool = False):
        self.path = path
        self.rehash = rehash
        self._stats: dict[str, Stat | None] = {}
        self._t_stat = 0
        self.n_trusted = self.n_racy = 0

    def _connect(self):
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        return db

    def _entries(self) -> dict[str, tuple]:
        import sqlite3

        if self.rehash or not self.path.is_file():
            return {}
        try:
            with contextlib.closing(self._connect()) as db:
                return {_decode(r[0]): r[1:] for r in db.execute("SELECT * FROM files")}
        except sqlite3.DatabaseError:
            self._set_aside()
            return {}

    def _set_aside(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_suffix(".damaged"))

    def lookup(self, items: Iterable) -> dict[str, str]:
        """{item.rel: digest} for each item (with `rel` and `path`) whose file the cache trusts:
        same size, mtime, ctime and inode as when it was hashed, and not racy."""
        self._t_stat = time.time_ns()
        entries = self._entries()
        trusted: dict[str, str] = {}
        for item in items:
            st = stat_of(item.path)
            self._stats[item.rel] = st
            e = entries.get(item.rel)
            if e is None or st is None or tuple(e[:4]) != st:
                continue
            if st[1] >= e[5] - RACY_NS:
                self.n_racy += 1
                continue
            trusted[item.rel] = e[4]
        self.n_trusted = len(trusted)
        return trusted

    def remember(self, hashed: dict[str, str], present: set[str] | None = None) -> int:
        """Record `hashed` ({rel: digest} computed this run, from the bytes read after `lookup`
        took their stats); with `present`, forget files no longer in the dataset. Returns the
        entries written; 0 when the cache cannot be written (the run is unaffected)."""
        import sqlite3

        rows = [
            (_encode(rel), *st, digest, self._t_stat)
            for rel, digest in hashed.items()
            if (st := self._stats.get(rel)) is not None
        ]
        if not rows and present is None:
            return 0
        try:
            with contextlib.closing(self._connect()) as db, db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                if present is not None:
                    n = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
                    if n > len(present):
                        have = [r for (r,) in db.execute("SELECT rel FROM files")]
                        gone = [(r,) for r in have if _decode(r) not in present]
                        db.executemany("DELETE FROM files WHERE rel = ?", gone)
        except (sqlite3.Error, OSError):
            return 0
        return len(rows)
