"""Official weight files into a folder: on first use, ahead of time, or imported from elsewhere.

Bytes go to `<file>.part`, renamed only once their hash matches; two processes fetch a file once.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from featstore.backbones.applications import available_backbones, get_backbone
from featstore.backbones.downloads import disk_error, fetch
from featstore.backbones.weights import (
    FOREIGN,
    OFFICIAL,
    OFFLINE_ENV,
    TRUSTED,
    WeightsFile,
    WeightsStatus,
    cache_dir,
    foreign_error,
    offline,
    part_path,
    prepare_folder,
    ways_out,
    weights_file,
    weights_status,
    write_sidecar,
)
from featstore.errors import (
    InvalidOptionError,
    WeightsDownloadError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from featstore.files import exclusive_lock, hash_file
from featstore.options import Record
from featstore.reporter import SILENT, Reporter


def download_into(wf: WeightsFile, folder: Path, timeout_s, reporter: Reporter) -> dict:
    """Fetch `wf` into `folder` (`.part`, hash checked, renamed; one process at a time); return
    `{"action": "downloaded" | "resumed" | "cached", "bytes": int, "seconds": float}`."""
    log = reporter.log
    prepare_folder(folder, wf)
    path = folder / wf.file
    waiting = f"waiting: another process (pid {{}}) is downloading {wf.file}"
    with exclusive_lock(folder / f".{wf.file}.lock", on_wait=lambda pid: log(waiting.format(pid))):
        if path.is_file():  # downloaded by the process we waited for
            return {"action": "cached", "bytes": path.stat().st_size, "seconds": 0.0}
        part = part_path(path)
        size = f" ({wf.size / 1e6:.1f} MB)" if wf.size else ""
        verb = "resuming" if part.is_file() else "downloading"
        log(f"{verb} ImageNet weights for {wf.backbone}{size} from {wf.url} into {folder}/")
        t0 = time.perf_counter()
        resumed, hashes, check = _fetch_checked(wf, part, timeout_s, reporter)
        n_bytes = part.stat().st_size
        os.replace(part, path)
        seconds = time.perf_counter() - t0
        write_sidecar(path, path.stat(), hashes, OFFICIAL)
        rate = n_bytes / 1e6 / max(seconds, 1e-9)
        log(f"downloaded {wf.file}: {n_bytes / 1e6:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s), {check}")
        return {"action": "resumed" if resumed else "downloaded", "bytes": n_bytes, "seconds": seconds}


def _fetch_checked(wf: WeightsFile, part: Path, timeout_s, reporter: Reporter) -> tuple[bool, dict, str]:
    """Fetch into `part` until its hash is the official one (a resumed file that fails is fetched
    once more from the start); return (resumed, hashes, check in words)."""

    def tick(done: int, total: int) -> None:
        reporter.progress(done, total or wf.size or 0, "download")

    for attempt in (1, 2):
        try:
            resumed = fetch(wf.url, part, timeout_s=timeout_s, expected_size=wf.size, progress=tick)
        except WeightsDownloadError as err:
            raise WeightsDownloadError(
                f"cannot download ImageNet weights for {wf.backbone}: {err}; {ways_out(wf)}"
            ) from None
        hashes = hash_file(part)
        official, check = wf.matches(hashes, part.stat().st_size)
        if official:
            return resumed, hashes, check
        part.unlink(missing_ok=True)
        if not (resumed and attempt == 1):
            raise WeightsMismatchError(
                f"the file downloaded from {wf.url} is not the official {wf.backbone} weight file ({check}); "
                f"it was deleted; {ways_out(wf)}"
            )
        reporter.log(
            f"the resumed download of {wf.file} failed its check; downloading it again from the start"
        )
    raise AssertionError("unreachable: the second attempt returns or raises")


@dataclass
class PullResult(Record):
    """One file fetched by `pull_weights`: where it is, what was done, bytes and seconds."""

    backbone: str
    file: str
    path: str
    action: str
    bytes: int
    seconds: float
    mb_per_s: float | None
    check: str


def _names(backbones: list[str] | None, all_: bool) -> list[str]:
    if all_ == bool(backbones):
        raise InvalidOptionError("all_", "name one or more backbones, or ask for all of them, not both")
    return available_backbones() if all_ else [get_backbone(b).name for b in dict.fromkeys(backbones)]


def pull_weights(
    backbones: list[str] | None = None,
    *,
    all_: bool = False,
    to: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    reporter: Reporter = SILENT,
) -> list[PullResult]:
    """Fetch the official weight files of `backbones` (None: all) ahead of time, into Keras' cache
    or, with `to`, a plain folder to carry to a machine without the internet (import them
    there, or serve it as `FEATSTORE_WEIGHTS_URL=file:///...`). Official files already there
    are kept. WeightsError as `ensure_weights`, for the first file that fails."""
    results = []
    for name in _names(backbones, all_):
        wf = weights_file(name)
        folder = cache_dir() if to is None else Path(to).expanduser()
        status = weights_status(name, folder)
        done = {"action": "cached", "bytes": status.bytes_on_disk or 0, "seconds": 0.0}
        usable = (OFFICIAL, TRUSTED) if to is None else (OFFICIAL,)
        if status.state == FOREIGN and to is None:
            raise foreign_error(wf, status)
        if status.state not in usable:
            done = pull_one(wf, folder, to is not None, timeout_s, reporter)
            status = weights_status(name, folder)
        rate = done["bytes"] / 1e6 / done["seconds"] if done["seconds"] > 0 else None
        results.append(
            PullResult(
                name,
                wf.file,
                status.path,
                done["action"],
                int(done["bytes"]),
                round(done["seconds"], 3),
                None if rate is None else round(rate, 2),
                status.check,
            )
        )
    return results


def pull_one(wf: WeightsFile, folder: Path, elsewhere: bool, timeout_s, reporter: Reporter) -> dict:
    """Put the official file of `wf` in `folder`: copied from Keras' cache when `elsewhere` has
    it, else downloaded."""
    if elsewhere:
        cached = weights_status(wf.backbone)
        if cached.state == OFFICIAL:
            prepare_folder(folder, wf)
            t0 = time.perf_counter()
            copy_into(Path(cached.path), folder / wf.file)
            return {
                "action": "copied from cache",
                "bytes": cached.bytes_on_disk,
                "seconds": time.perf_counter() - t0,
            }
        (folder / wf.file).unlink(missing_ok=True)
    if offline():
        raise WeightsNotFoundError(
            f"{OFFLINE_ENV}=1 forbids downloading {wf.file} from {wf.url}; unset it to pull"
        )
    return download_into(wf, folder, timeout_s, reporter)


def ensure_weights(
    backbone: str,
    *,
    timeout_s: float | None = None,
    reporter: Reporter = SILENT,
) -> WeightsStatus:
    """Return the official or trusted ImageNet weight file of registry name `backbone`,
    downloading it into Keras' cache first when it is missing.

    `timeout_s` is the seconds to wait for a connection or more bytes (default
    `$FEATSTORE_DOWNLOAD_TIMEOUT_S` or 30); `reporter` gets `progress(bytes_done, bytes_total,
    "download")` and a line at the start and end of a download.

    Raises
    ------
    WeightsNotFoundError
        Missing and `FEATSTORE_OFFLINE=1`.
    WeightsMismatchError
        A cached file that is not official nor trusted, or a download that is not (deleted).
    WeightsDownloadError
        Network, HTTP, timeout, disk or permission failure; nothing half-written looks complete.
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
    download_into(wf, cache_dir(), timeout_s, reporter)
    status = weights_status(wf.backbone)
    if status.state not in (OFFICIAL, TRUSTED):  # pragma: no cover - checked before the rename
        raise foreign_error(wf, status)
    return status


def copy_into(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` through `dest.part` and a rename."""
    part = part_path(dest)
    try:
        shutil.copyfile(source, part)
        os.replace(part, dest)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise disk_error(err, part) from None


@dataclass
class ImportResult(Record):
    """A weight file taken into Keras' cache by `import_weights`."""

    backbone: str
    path: str
    state: str
    check: str
    sha256: str
    warning: str | None = None


def import_weights(file: str | os.PathLike, backbone: str, *, trust: bool = False) -> ImportResult:
    """Place a weight file obtained elsewhere in Keras' cache as `backbone`'s ImageNet weights.

    The official file is accepted; another only with `trust`, with a warning and its sha256
    recorded, which goes into the backbone digest so its features never mix with official ones.

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
