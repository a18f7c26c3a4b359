"""One file fetched over HTTP(S) or from a `file://` folder into a partial file, resumably.

Every network and disk failure becomes one `WeightsDownloadError` line; checking hashes and
renaming the partial file is the caller's job.
"""

from __future__ import annotations

import errno
import http.client
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from featstore.errors import WeightsDownloadError, WeightsMismatchError

#: Seconds to wait for a connection or for the next bytes of an answer.
DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "FEATSTORE_DOWNLOAD_TIMEOUT_S"
CHUNK_BYTES = 1 << 16
#: Slowest transfer kept going (curl's --speed-limit), over a window of the timeout (--speed-time).
MIN_BYTES_PER_S = 1024
USER_AGENT = "featstore (urllib)"

Progress = Callable[[int, int], None]


def download_timeout_s(timeout_s: float | None = None) -> float:
    """Return `timeout_s`, else `$FEATSTORE_DOWNLOAD_TIMEOUT_S`, else 30 s."""
    if timeout_s is not None:
        return float(timeout_s)
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise WeightsDownloadError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def fetch(
    url: str,
    part: Path,
    *,
    timeout_s: float | None = None,
    expected_size: int | None = None,
    progress: Progress | None = None,
) -> bool:
    """Fetch `url` (http, https or file) into the partial file `part`, resuming with an HTTP range
    request (starting over when the server ignores it); return True when earlier bytes were kept.

    `timeout_s` bounds the wait for the connection and between reads, and is the window over
    which at least `MIN_BYTES_PER_S` must arrive (a server that trickles is cut off);
    `progress(bytes_done, bytes_total)` gets `expected_size` (0: unknown) as the total. A file
    declared or sent larger than `expected_size` is refused at once (WeightsMismatchError). WeightsDownloadError for no
    answer in time, a transfer too slow, a DNS or connection failure, an HTTP error or a redirect
    loop, an answer cut short, too large, or a full disk; the partial file is kept after network
    failures, removed otherwise.
    """
    timeout = download_timeout_s(timeout_s)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        return _copy_file(url, part, expected_size, progress)
    if scheme not in ("http", "https"):
        raise WeightsDownloadError(f"cannot download {url}: only http, https and file URLs are supported")
    have = part.stat().st_size if part.exists() else 0
    response = _open(url, part, have, timeout)
    if response is None:  # the partial file already holds every byte
        return True
    with response:
        resumed = have > 0 and response.status == 206 and _range_start(response) == have
        have = have if resumed else 0
        length = response.headers.get("Content-Length")
        known = bool(length and length.isdigit())
        total = have + int(length) if known else (expected_size or 0)
        if known and expected_size and total > expected_size:
            part.unlink(missing_ok=True)
            raise WeightsMismatchError(
                f"{url} declares {total:,} bytes, the official file has {expected_size:,}; refusing it "
                "(check the mirror)"
            )
        have = _stream(response, part, have, total, resumed, progress, timeout, expected_size)
    if known and have < total:
        raise WeightsDownloadError(
            f"the connection to {url} closed after {_mb(have)} of {_mb(total)}; run the same command "
            "again to resume"
        )
    return resumed


def _open(url: str, part: Path, have: int, timeout: float):
    """The HTTP answer for the bytes from `have` on; None when the server says there are none
    left (416 to a range request)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        # a new opener reads the proxy variables as they are now (urlopen's global one keeps the first)
        return urllib.request.build_opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return None
        part.unlink(missing_ok=True)
        if 300 <= err.code < 400:
            raise WeightsDownloadError(
                f"{url} redirects in a loop (or more than 10 times); check the address of the mirror"
            ) from None
        raise WeightsDownloadError(f"HTTP {err.code} {err.reason} from {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise WeightsDownloadError(f"{_network_reason(err, url, timeout)}: {url}") from None


def _stream(
    response, part: Path, have: int, total: int, append: bool, progress, timeout: float, limit: int | None
) -> int:
    """Write the answer's body to `part` (appended, or from the start); return its size then.
    Cut off below `MIN_BYTES_PER_S` over a `timeout` window (the bytes so far kept), or past
    `limit` bytes (removed)."""
    url = response.geturl()
    window_start, window_bytes = time.monotonic(), 0
    try:
        with open(part, "ab" if append else "wb") as out:
            if progress:
                progress(have, total)
            while chunk := _read(response, url, have, total, timeout):
                out.write(chunk)
                have += len(chunk)
                window_bytes += len(chunk)
                if limit and have > limit:
                    raise _TooLarge
                if progress:
                    progress(have, total)
                elapsed = time.monotonic() - window_start
                if elapsed >= timeout:
                    if window_bytes < MIN_BYTES_PER_S * elapsed:
                        out.flush()
                        raise WeightsDownloadError(
                            f"{urllib.parse.urlsplit(url).hostname} sent {window_bytes} bytes in {elapsed:.0f} s "
                            f"(slower than {MIN_BYTES_PER_S} bytes/s) after {_mb(have)} of "
                            f"{_mb(total) if total else 'an unknown size'} from {url}; run the same command "
                            "again to resume"
                        )
                    window_start, window_bytes = time.monotonic(), 0
            out.flush()
            os.fsync(out.fileno())
    except _TooLarge:
        part.unlink(missing_ok=True)
        raise WeightsMismatchError(
            f"{url} sent more than the official file's {limit:,} bytes; refusing it (check the mirror)"
        ) from None
    except OSError as err:
        part.unlink(missing_ok=True)
        raise disk_error(err, part) from None
    return have


class _TooLarge(Exception):
    """The body went past the expected size."""


def _read(response, url: str, have: int, total: int, timeout: float) -> bytes:
    """The next bytes that have arrived (read1: kept when the read after them times out)."""
    try:
        return response.read1(CHUNK_BYTES)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
        raise WeightsDownloadError(
            f"{_network_reason(err, url, timeout, during=True)} after {_mb(have)} of "
            f"{_mb(total) if total else 'an unknown size'} from {url}; run the same command again to resume"
        ) from None


def _copy_file(url: str, part: Path, expected_size: int | None, progress: Progress | None) -> bool:
    source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not source.is_file():
        part.unlink(missing_ok=True)
        raise WeightsDownloadError(f"{url} does not exist (no file {source})")
    total = source.stat().st_size
    done = 0
    try:
        with open(source, "rb") as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total or expected_size or 0)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        part.unlink(missing_ok=True)
        if err.filename and Path(err.filename) == source:
            raise WeightsDownloadError(f"cannot read {source}: {err.strerror}") from None
        raise disk_error(err, part) from None
    return False


def _range_start(response) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _network_reason(err: BaseException, url: str, timeout: float, during: bool = False) -> str:
    """What went wrong, in words, without the URL."""
    reason = getattr(err, "reason", err)
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return f"{host} {'stopped sending' if during else 'did not answer'} within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host {host} (no network or DNS)"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, (ConnectionResetError, http.client.HTTPException)):
        return f"connection to {host} broken ({type(reason).__name__})"
    return str(getattr(reason, "strerror", None) or reason or type(reason).__name__)


def disk_error(err: OSError, part: Path) -> WeightsDownloadError:
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        free = shutil.disk_usage(part.parent).free if part.parent.exists() else 0
        return WeightsDownloadError(
            f"no space left to write {part} ({err.strerror}; {_mb(free)} free); the partial file was removed"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WeightsDownloadError(f"cannot write {part} ({err.strerror})")
    return WeightsDownloadError(f"cannot write {part}: {err}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
