"""ImageNet weight files: the catalog's record of each, their state in Keras' cache, imports.

Owns the official file of every registry backbone as Keras' own application code names it
(origin URL, file name, size, md5 or sha256: `featstore/backbones/catalog.json`), where it lives
(`$KERAS_HOME/models/`, shared with Keras), how it is fetched (the origin, or the mirror in
`$FEATSTORE_WEIGHTS_URL`; never with `FEATSTORE_OFFLINE=1`) and which files may be used: the
official file, or one the user imported with `trust`. Each checked file gets a hidden sidecar
`.<file>.featstore.json` (sizes, hashes, official or trusted), so later runs need not read it
again. Fetching lives in `weights_pull` (`ensure_weights` calls it for a missing file).

Imports `registry`, `catalog`, `files` and `errors`; never TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from featstore.backbones.catalog import load_catalog
from featstore.backbones.registry import available_backbones, get_backbone, keras_home
from featstore.errors import (
    FeatstoreError,
    UnknownBackboneError,
    WeightsDownloadError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from featstore.files import hash_file

MIRROR_ENV = "FEATSTORE_WEIGHTS_URL"
OFFLINE_ENV = "FEATSTORE_OFFLINE"
PART_SUFFIX = ".part"

#: States of a weight file in the cache.
OFFICIAL, TRUSTED, FOREIGN, MISSING = "official", "trusted", "not official", "missing"

Progress = Callable[..., None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class WeightsFile:
    """The official no-top ImageNet weight file of one backbone, as Keras' code records it.

    `hash` is the md5 (32 hex digits) or sha256 (64) that Keras checks, None where Keras
    records none (MobileNet, MobileNetV2): there the size in bytes is what is checked.
    """

    backbone: str
    file: str
    origin: str
    size: int | None
    hash: str | None
    hash_algorithm: str | None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)

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
    """Return the catalog record of `backbone`'s official ImageNet weight file.

    Raises
    ------
    UnknownBackboneError
        Not a registry backbone.
    """
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
class WeightsStatus:
    """One backbone's weight file in a folder: present or not, official, trusted or not, and why.

    `size` is the official size in bytes; `bytes_on_disk` what the present file has;
    `partial_bytes` the bytes of an unfinished download (`<file>.part`), if any.
    """

    backbone: str
    file: str
    state: str
    check: str
    path: str
    size: int | None
    bytes_on_disk: int | None = None
    sha256: str | None = None
    partial_bytes: int | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def weights_status(backbone: str, folder: Path | None = None, verify: bool = False) -> WeightsStatus:
    """Return the state of `backbone`'s weight file in `folder` (default Keras' cache).

    The file's hashes are read once and kept in its sidecar; with `verify` every byte is read
    again (and a trusted file whose bytes changed is no longer trusted).
    """
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


def ensure_weights(
    backbone: str,
    *,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    log: Log | None = None,
) -> WeightsStatus:
    """Return the usable (official or trusted) ImageNet weight file of `backbone`, downloading it
    into Keras' cache first when it is missing.

    Parameters
    ----------
    backbone
        A registry name.
    timeout_s
        Seconds to wait for a connection or for more bytes (default `$FEATSTORE_DOWNLOAD_TIMEOUT_S`
        or 30).
    progress
        Called as `progress(bytes_done, bytes_total, "download")` while downloading.
    log
        Called with one line when a download starts and when it ends.

    Returns
    -------
    WeightsStatus
        State official or trusted, with the file's path and sha256.

    Raises
    ------
    WeightsNotFoundError
        Missing and `FEATSTORE_OFFLINE=1`.
    WeightsMismatchError
        A file in the cache is not the official one and was not trusted; or the downloaded file
        is not (it is deleted).
    WeightsDownloadError
        Network, HTTP, timeout, disk or permission failure; nothing half-written is left that
        looks complete.
    """
    wf = weights_file(backbone)
    status = weights_status(wf.backbone)
    if status.state in (OFFICIAL, TRUSTED):
        return status
    if status.state == FOREIGN:
        raise foreign_error(wf, status)
    if offline():
        raise WeightsNotFoundError(
            f"ImageNet weights for {wf.backbone} are not cached ({status.path}) and {OFFLINE_ENV}=1 forbids "
            f"downloading them from {wf.url}; {ways_out(wf)}"
        )
    from featstore.backbones.weights_pull import download_into

    download_into(wf, cache_dir(), timeout_s, progress, log)
    status = weights_status(wf.backbone)
    if status.state not in (OFFICIAL, TRUSTED):  # pragma: no cover - checked before the rename
        raise foreign_error(wf, status)
    return status


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


def copy_into(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` through `dest.part` and a rename."""
    from featstore.backbones.downloads import disk_error

    part = part_path(dest)
    try:
        shutil.copyfile(source, part)
        os.replace(part, dest)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise disk_error(err, part) from None


@dataclass
class ImportResult:
    """A weight file taken into Keras' cache by `import_weights`."""

    backbone: str
    path: str
    state: str
    check: str
    sha256: str
    warning: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def import_weights(file: str | os.PathLike, backbone: str, *, trust: bool = False) -> ImportResult:
    """Place a weight file obtained elsewhere in Keras' cache as `backbone`'s ImageNet weights.

    Accepted when it is the official file (its hash, or its size where Keras records no hash);
    otherwise only with `trust`, with a warning, its sha256 recorded: features made with it
    carry that sha256 in their backbone digest, so they never mix with official ones.

    Raises
    ------
    WeightsNotFoundError
        `file` does not exist.
    WeightsMismatchError
        Not the official file and `trust` is False.
    WeightsDownloadError
        The cache folder cannot be written or the disk is full.
    """
    wf = weights_file(backbone)
    source = Path(file).expanduser()
    if not source.is_file():
        raise WeightsNotFoundError(f"weights file {source} does not exist")
    hashes = hash_file(source)
    official, check = wf.matches(hashes, source.stat().st_size)
    if not official and not trust:
        raise WeightsMismatchError(
            f"{source} is not the official {wf.backbone} weight file ({check}); pass --trust to use it "
            "anyway (its sha256 is recorded and marks every feature made with it), or pass --weights PATH"
        )
    folder = cache_dir()
    prepare_folder(folder, wf)
    dest = folder / wf.file
    if not (dest.exists() and os.path.samefile(source, dest)):
        copy_into(source, dest)
    state = OFFICIAL if official else TRUSTED
    write_sidecar(dest, dest.stat(), hashes, state, source=str(source.absolute()))
    warning = None
    if not official:
        warning = (
            f"{dest} is not the official {wf.backbone} weight file ({check}); it is trusted as you asked, "
            f"and its sha256 {hashes['sha256'][:12]} marks the features made with it"
        )
    return ImportResult(wf.backbone, str(dest), state, check, hashes["sha256"], warning)


def list_weights(backbones: list[str] | None = None, *, verify: bool = False) -> list[WeightsStatus]:
    """Return the state of every backbone's weight file in Keras' cache (or of `backbones`).

    With `verify`, every present file is read again and checked against the catalog.
    """
    names = [get_backbone(b).name for b in backbones] if backbones else available_backbones()
    return [weights_status(name, verify=verify) for name in names]
