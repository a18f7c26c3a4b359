"""ImageNet weight files in Keras' cache (`$KERAS_HOME/models/`): the official file of each
application, the state of each file here and why, and where files are fetched from.

A checked file gets a hidden sidecar `.<file>.featstore.json`, so later runs need not read it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from featstore.backbones.applications import available_backbones, get_backbone, keras_home, load_catalog
from featstore.errors import (
    FeatstoreError,
    UnknownBackboneError,
    WeightsDownloadError,
    WeightsMismatchError,
)
from featstore.files import hash_file
from featstore.options import Record

MIRROR_ENV = "FEATSTORE_WEIGHTS_URL"
OFFLINE_ENV = "FEATSTORE_OFFLINE"
PART_SUFFIX = ".part"

#: States of a weight file in the cache.
OFFICIAL, TRUSTED, FOREIGN, MISSING = "official", "trusted", "not official", "missing"

Progress = Callable[..., None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class WeightsFile(Record):
    """The official no-top ImageNet weight file of one backbone, as Keras' code records it; `hash`
    is the md5 or sha256 Keras checks, None where it records none (then the size is checked)."""

    backbone: str
    file: str
    origin: str
    size: int | None
    hash: str | None
    hash_algorithm: str | None

    @property
    def url(self) -> str:
        """Where the file is fetched from: `$FEATSTORE_WEIGHTS_URL/<file>` when set, else the origin."""
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        if not mirror:
            return self.origin
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(self.file)}"

    def matches(self, hashes: dict[str, str], size: int) -> tuple[bool, str]:
        """Whether a file with these hashes and size is the official one, and the check in words."""
        if self.hash:
            got = hashes[self.hash_algorithm]
            if got == self.hash:
                return True, f"{self.hash_algorithm} matches Keras' record"
            return False, f"{self.hash_algorithm} {got}, Keras records {self.hash}"
        if self.size is None or size == self.size:
            return True, f"size matches ({size} bytes; Keras records no hash for this file)"
        return False, f"{size} bytes, the official file has {self.size} (Keras records no hash for it)"


def weights_file(backbone: str) -> WeightsFile:
    """Return the catalog record of `backbone`'s official weight file; UnknownBackboneError when
    it is not a registry backbone."""
    spec = get_backbone(backbone)
    record = load_catalog().get(spec.name, {}).get("weights")
    if not record:
        raise UnknownBackboneError(f"the catalog records no ImageNet weight file for {spec.name}")
    return WeightsFile(backbone=spec.name, **record)


def cache_dir() -> Path:
    """Keras' weight cache: `$KERAS_HOME/models/` (default `~/.keras/models/`)."""
    return keras_home() / "models"


def offline() -> bool:
    """True when `$FEATSTORE_OFFLINE` is set to 1, true, yes or on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.featstore.json")


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


@dataclass
class WeightsStatus(Record):
    """One backbone's weight file in a folder: present or not, official, trusted or not, and why;
    `size` is the official size, `bytes_on_disk` the file's, `partial_bytes` a `.part` file's."""

    backbone: str
    file: str
    state: str
    check: str
    path: str
    size: int | None
    bytes_on_disk: int | None = None
    sha256: str | None = None
    partial_bytes: int | None = None


def weights_status(backbone: str, folder: Path | None = None, verify: bool = False) -> WeightsStatus:
    """Return the state of `backbone`'s weight file in `folder` (default Keras' cache), hashes read
    once and kept in its sidecar; `verify` reads every byte again."""
    wf = weights_file(backbone)
    path = (folder or cache_dir()) / wf.file
    part = part_path(path)
    status = WeightsStatus(wf.backbone, wf.file, MISSING, "not downloaded", str(path), wf.size)
    if part.is_file():
        status.partial_bytes = part.stat().st_size
        status.check = f"partial download ({status.partial_bytes} bytes; the next run resumes it)"
    if not path.is_file():
        return status
    st = path.stat()
    status.bytes_on_disk = st.st_size
    record = _read_sidecar(path)
    same = record is not None and (record.get("size"), record.get("mtime_ns")) == (st.st_size, st.st_mtime_ns)
    hashes = record["hashes"] if same and not verify else hash_file(path)
    status.sha256 = hashes["sha256"]
    official, check = wf.matches(hashes, st.st_size)
    if official:
        status.state, status.check = OFFICIAL, check
    elif (
        record is not None
        and record.get("state") == TRUSTED
        and record["hashes"]["sha256"] == hashes["sha256"]
    ):
        status.state = TRUSTED
        status.check = f"trusted by `weights import --trust` ({check})"
    else:
        status.state, status.check = FOREIGN, check
        if record is not None and record.get("state") == TRUSTED:
            status.check = f"changed since it was trusted ({check})"
    if not same or verify:
        write_sidecar(path, st, hashes, status.state if status.state != FOREIGN else None)
    return status


def _read_sidecar(path: Path) -> dict | None:
    try:
        record = json.loads(_sidecar(path).read_text())
        return record if isinstance(record.get("hashes"), dict) and "sha256" in record["hashes"] else None
    except (OSError, ValueError, AttributeError):
        return None


def write_sidecar(path: Path, st: os.stat_result, hashes: dict, state: str | None, **extra) -> None:
    """Record the file's hashes (best effort: a read-only cache only costs a re-read next time)."""
    from featstore.files import write_atomic

    if state is None:  # a foreign file: nothing worth remembering, and an old trust must go
        _sidecar(path).unlink(missing_ok=True)
        return
    previous = _read_sidecar(path) or {}
    record = {
        "file": path.name,
        "state": state,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "hashes": hashes,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if state == TRUSTED:
        record["source"] = extra.get("source") or previous.get("source")
    try:
        write_atomic(_sidecar(path), json.dumps(record, indent=1).encode())
    except (OSError, FeatstoreError):  # a cache we cannot write is still usable: it is read again next time
        pass


def ways_out(wf: WeightsFile) -> str:
    return (
        f"ways out: set {MIRROR_ENV} to a mirror (http(s) URL or file:// folder holding {wf.file}), fetch the file "
        f"elsewhere and run `featstore weights import FILE --backbone {wf.backbone}`, or pass --weights none "
        "or --weights PATH"
    )


def foreign_error(wf: WeightsFile, status: WeightsStatus) -> WeightsMismatchError:
    return WeightsMismatchError(
        f"{status.path} is not the official {wf.backbone} weight file ({status.check}); featstore neither "
        f"uses nor replaces it: run `featstore weights import {status.path} --backbone {wf.backbone} --trust` "
        "to use it (its own sha256 then marks the features), move it away to download the official file, "
        "or pass --weights PATH"
    )


def prepare_folder(folder: Path, wf: WeightsFile) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise WeightsDownloadError(
            f"cannot write the weights folder {folder} ({err.strerror or err}); set KERAS_HOME to a writable "
            f"folder, or {ways_out(wf)}"
        ) from None


def list_weights(backbones: list[str] | None = None, *, verify: bool = False) -> list[WeightsStatus]:
    """Return the state of every backbone's (or `backbones`') weight file in Keras' cache; `verify`
    reads every present file again."""
    names = [get_backbone(b).name for b in backbones] if backbones else available_backbones()
    return [weights_status(name, verify=verify) for name in names]
