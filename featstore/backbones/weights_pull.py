"""Fetching official weight files: into Keras' cache on first use, or ahead of time into a
folder to carry (`pull_weights`). The bytes go to `<file>.part` and are renamed only once their
hash matches; two processes needing one file fetch it once.

Imports `weights` (records, cache state), `downloads` (the network), `registry`, `files` and
`errors`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from featstore.backbones.downloads import fetch
from featstore.backbones.registry import available_backbones, get_backbone
from featstore.backbones.weights import (
    FOREIGN,
    OFFICIAL,
    OFFLINE_ENV,
    TRUSTED,
    Log,
    Progress,
    WeightsFile,
    cache_dir,
    copy_into,
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


def download_into(wf: WeightsFile, folder: Path, timeout_s, progress, log) -> dict:
    """Fetch `wf` into `folder`: `.part` first, hash checked, then renamed; one process at a time.

    Returns `{"action": "downloaded" | "resumed" | "cached", "bytes": int, "seconds": float}`.
    """
    log = log or (lambda _line: None)
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
        resumed, hashes, check = _fetch_checked(wf, part, timeout_s, progress, log)
        n_bytes = part.stat().st_size
        os.replace(part, path)
        seconds = time.perf_counter() - t0
        write_sidecar(path, path.stat(), hashes, OFFICIAL)
        rate = n_bytes / 1e6 / max(seconds, 1e-9)
        log(f"downloaded {wf.file}: {n_bytes / 1e6:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s), {check}")
        return {"action": "resumed" if resumed else "downloaded", "bytes": n_bytes, "seconds": seconds}


def _fetch_checked(wf: WeightsFile, part: Path, timeout_s, progress, log) -> tuple[bool, dict, str]:
    """Fetch into `part` until its hash is the official one: a resumed file that fails is fetched
    once more from the start (it may hold another version's bytes); return (resumed, hashes,
    check in words)."""

    def tick(done: int, total: int) -> None:
        if progress:
            progress(done, total or wf.size or 0, "download")

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
        log(f"the resumed download of {wf.file} failed its check; downloading it again from the start")
    raise AssertionError("unreachable: the second attempt returns or raises")


@dataclass
class PullResult:
    """One file fetched by `pull_weights`: where it is, what was done, bytes and seconds."""

    backbone: str
    file: str
    path: str
    action: str
    bytes: int
    seconds: float
    mb_per_s: float | None
    check: str

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


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
    progress: Progress | None = None,
    log: Log | None = None,
) -> list[PullResult]:
    """Fetch the official weight files of `backbones` (or every backbone) ahead of time.

    Into Keras' cache, or with `to` into a plain folder of Keras file names, to carry to a
    machine without the internet (import them there, or serve the folder as
    `FEATSTORE_WEIGHTS_URL=file:///...`). A file already there and official is kept; with
    `to`, an official file in Keras' cache is copied instead of downloaded.

    Raises
    ------
    WeightsError
        As `ensure_weights`, for the first file that fails (the files before it are kept).
    """
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
            done = pull_one(wf, folder, to is not None, timeout_s, progress, log)
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


def pull_one(wf: WeightsFile, folder: Path, elsewhere: bool, timeout_s, progress, log) -> dict:
    """Put the official file of `wf` in `folder`: copied from Keras' cache when `elsewhere` and
    it is there, else downloaded (a foreign file in a pull folder is replaced)."""
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
    return download_into(wf, folder, timeout_s, progress, log)
