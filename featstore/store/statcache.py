"""The stat cache of a data root: (relative path, size, mtime_ns, ctime_ns, inode) -> the file's
content digest, so an unchanged folder costs a directory scan, not a read of every image.

An entry is trusted only when every stat field matches and the file's mtime is safely older
than the moment it was hashed (git's racy-timestamp rule): a file written in the same instant
as it was hashed may change again within one timestamp tick, so it is hashed again next run.
The cache is an SQLite file under the store (`statcache/<root digest>.sqlite`), updated row by
row in one transaction; a damaged or unwritable cache is set aside, never a failed run.

Beside the files, the cache records scans: the SHA-256 of every file's stats, label and split
(`scan_key`) -> the `rows_key` of the feature set a run left, and the files it could not read.
A run whose scan is recorded for its set, with every file safely older than that run's stats,
and whose set still has that `rows_key` has nothing to do: decided from one hash of the stats,
without reading a file entry or a digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
from array import array
from collections.abc import Iterable
from pathlib import Path

from featstore.store.layout import StoreLayout

#: An entry whose mtime is less than this before its hashing is racy (filesystems with 2 s
#: timestamps included).
RACY_NS = 2_000_000_000
#: One row per file: its relative path, `sig` (size, mtime_ns, ctime_ns, inode and the time it
#: was hashed, packed as five little-endian int64: one object to read, one to compare) and digest.
_SCHEMA = "CREATE TABLE IF NOT EXISTS files (rel PRIMARY KEY, sig BLOB, digest TEXT)"
#: One row per recorded scan of a feature set (`owner`): its key, the set's rows_key after the
#: run, when the run took its stats, and the files it could not read ([rel, reason] as JSON).
_SCANS = (
    "CREATE TABLE IF NOT EXISTS scans (owner TEXT, key TEXT, rows_key TEXT, stat_ns INTEGER, "
    "skipped TEXT, PRIMARY KEY (owner, key))"
)
#: Scans kept per feature set (the newest).
KEEP_SCANS = 4
_SIG = struct.Struct("<4q")
_HASHED = struct.Struct("<q")


def _key(rel: str) -> str | bytes:
    """A relative path as stored: text, or bytes for a file name that is not UTF-8 (kept as it was)."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return rel.encode("utf-8", "surrogateescape")
    return rel


def _decode(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def cache_path(layout: StoreLayout, root: str | os.PathLike) -> Path:
    """The stat cache file of data root `root` in the store."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(root))).hexdigest()[:20]
    return layout.root / "statcache" / f"{key}.sqlite"


class StatCache:
    """The stat cache of one data root. `stat_files(items)` takes every file's stats once;
    `recorded` answers from a recorded scan of them, `lookup` returns the digests it can trust
    file by file; `remember(hashed)` records the digests a run computed (with the stats taken
    before they were read) and the run's scan."""

    def __init__(self, path: Path, rehash: bool = False):
        self.path = path
        self.rehash = rehash
        self._stats: dict[str, bytes | None] = {}
        self._mtimes: dict[str, int] = {}
        self._t_stat = 0

    def _connect(self):
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        db.execute(_SCANS)
        return db

    def _entries(self) -> dict[str, tuple]:
        import sqlite3

        if self.rehash or not self.path.is_file():
            return {}
        try:
            with contextlib.closing(self._connect()) as db:
                rows = db.execute("SELECT rel, sig, digest FROM files").fetchall()
            return {(r[0] if type(r[0]) is str else _decode(r[0])): r for r in rows}
        except sqlite3.DatabaseError:
            self._set_aside()
            return {}

    def _set_aside(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_suffix(".damaged"))

    def stat_files(self, items: Iterable) -> None:
        """Take the stats of every file of `items` (with `rel` and `path`), once per run, before
        any is read: what `lookup`, `scan_key` and `remember` use."""
        self._t_stat = time.time_ns()
        stats, mtimes = self._stats, self._mtimes
        stat, pack = os.stat, _SIG.pack
        for item in items:
            try:
                st = stat(item.path)
            except OSError:
                stats[item.rel] = None
                continue
            stats[item.rel] = pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            mtimes[item.rel] = st.st_mtime_ns

    def lookup(self, items: Iterable) -> dict[str, str]:
        """{item.rel: digest} for each item (stat'ed by `stat_files`) whose file the cache trusts:
        same size, mtime, ctime and inode as when it was hashed, and not racy."""
        entries = self._entries()
        trusted: dict[str, str] = {}
        stats, mtimes = self._stats, self._mtimes
        hashed_at = _HASHED.unpack_from
        for item in items:
            rel = item.rel
            e = entries.get(rel)
            if e is not None and e[1][:32] == stats[rel] and mtimes[rel] < hashed_at(e[1], 32)[0] - RACY_NS:
                trusted[rel] = e[2]
        return trusted

    def scan_key(self, items: list, owner: str) -> str | None:
        """The key of a scan of `items` (stat'ed by `stat_files`) for feature set `owner`: the
        SHA-256 of their relative paths, stats, labels and splits in order; None when a file
        could not be stat'ed."""
        if not items:
            return None
        stats = self._stats
        _, rels, labels, splits = zip(*items, strict=True)
        sigs = [stats.get(rel) for rel in rels]
        if None in sigs:
            return None
        h = hashlib.sha256(f"{owner}\0{len(items)}\0".encode("utf-8", "surrogateescape"))
        h.update("\n".join(rels).encode("utf-8", "surrogateescape"))
        h.update(b"".join(sigs))
        h.update(array("q", labels).tobytes())
        h.update("\n".join(splits).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def recorded(self, owner: str, key: str | None, items: list) -> tuple[str, list[list[str]]] | None:
        """(rows_key, [[rel, reason], ...] of the files that could not be read) recorded for the
        scan `key` of `items` in feature set `owner`, when every file of `items` is safely
        older than the stats of the run that recorded it (racy rule); None otherwise."""
        import sqlite3

        if key is None or self.rehash or not self.path.is_file():
            return None
        try:
            with contextlib.closing(self._connect()) as db:
                row = db.execute(
                    "SELECT rows_key, stat_ns, skipped FROM scans WHERE owner = ? AND key = ?", (owner, key)
                ).fetchone()
        except sqlite3.DatabaseError:
            return None
        if row is None or not items:
            return None
        mtimes = self._mtimes
        if max(mtimes[it.rel] for it in items) >= row[1] - RACY_NS:
            return None
        return row[0], json.loads(row[2])

    def remember(
        self, hashed: dict[str, str], present: set[str] | None = None, scan: tuple | None = None
    ) -> int:
        """Record `hashed` ({rel: digest} computed this run, from the bytes read after
        `stat_files` took their stats); with `present`, forget files no longer in the dataset;
        with `scan` (owner, key, rows_key, [[rel, reason], ...]), record the scan. Returns the
        entries written; 0 when the cache cannot be written (the run is unaffected)."""
        import sqlite3

        when = _HASHED.pack(self._t_stat)
        rows = [
            (_key(rel), sig + when, digest)
            for rel, digest in hashed.items()
            if (sig := self._stats.get(rel)) is not None
        ]
        if not rows and present is None and scan is None:
            return 0
        try:
            with contextlib.closing(self._connect()) as db, db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", rows)
                if scan is not None and scan[1] is not None:
                    owner, key, key_of_rows, skipped = scan
                    db.execute(
                        "INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?, ?)",
                        (owner, key, key_of_rows, self._t_stat, json.dumps(skipped)),
                    )
                    db.execute(
                        "DELETE FROM scans WHERE owner = ? AND key NOT IN (SELECT key FROM scans "
                        "WHERE owner = ? ORDER BY stat_ns DESC LIMIT ?)",
                        (owner, owner, KEEP_SCANS),
                    )
                if present is not None:
                    n = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
                    if n > len(present):
                        have = [r for (r,) in db.execute("SELECT rel FROM files")]
                        gone = [(r,) for r in have if _decode(r) not in present]
                        db.executemany("DELETE FROM files WHERE rel = ?", gone)
        except (sqlite3.Error, OSError):
            return 0
        return len(rows)
