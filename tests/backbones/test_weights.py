"""ImageNet weight files: real downloads from a real HTTP server on 127.0.0.1, and every failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from weights_server import FILE, NAME, WeightsServer, free_port, md5, payload, record, register

import featstore.backbones.weights as weights_mod
from featstore.backbones.applications import get_backbone, load_catalog
from featstore.backbones.fetching import ensure_weights, import_weights, pull_weights
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import resolve_recipe
from featstore.backbones.weights import FOREIGN, MISSING, OFFICIAL, TRUSTED, list_weights, weights_status
from featstore.errors import (
    InvalidOptionError,
    WeightsDownloadError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from featstore.reporter import Reporter


def recipe_of(backbone, **kw):
    return resolve_recipe(BackboneOptions(backbone, **kw))


TESTS = Path(__file__).parent


@pytest.fixture
def served(keras_home, monkeypatch):
    """NAME's weights served at /keras/<file> by a real local server and registered under their md5."""
    server = WeightsServer()
    data = payload()
    server.files[f"/keras/{FILE}"] = data
    register(monkeypatch, record(server.url(f"/keras/{FILE}"), data))
    monkeypatch.delenv("FEATSTORE_OFFLINE", raising=False)
    yield SimpleNamespace(server=server, data=data, path=keras_home / "models" / FILE, home=keras_home)
    server.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_catalog_records_every_official_weight_file():
    catalog = load_catalog()
    for name, entry in catalog.items():
        w = entry["weights"]
        assert w["file"] == get_backbone(name).weights_file
        assert w["origin"].startswith("https://storage.googleapis.com/") and w["size"] > 1_000_000
        if w["hash"] is None:
            assert name in ("mobilenet", "mobilenet_v2")  # Keras records no hash for these two
        else:
            assert len(w["hash"]) == {"md5": 32, "sha256": 64}[w["hash_algorithm"]]
    assert catalog["vgg16"]["weights"]["hash"] == "6d6bbae143d832006294945121d1f1fc"


def test_download_checks_the_hash_and_keeps_the_file_in_keras_cache(served):
    seen, lines = [], []
    status = ensure_weights(NAME, reporter=Reporter(lines.append, lambda *a: seen.append(a)))
    assert status.state == OFFICIAL and status.path == str(served.path)
    assert served.path.read_bytes() == served.data
    assert seen[-1] == (len(served.data), len(served.data), "download")
    assert lines[0].startswith(f"downloading ImageNet weights for {NAME} (0.3 MB) from http://127.0.0.1")
    assert "md5 matches Keras' record" in lines[-1] and "MB/s" in lines[-1]
    assert leftovers(served.path.parent) == [f".{FILE}.featstore.json", FILE]
    n = len(served.server.behaviour.requests)
    assert ensure_weights(NAME).state == OFFICIAL  # cached: no request, no re-read of the bytes
    assert len(served.server.behaviour.requests) == n


def test_resolve_recipe_downloads_and_the_digest_holds_the_weights_sha256(served):
    import hashlib

    recipe = recipe_of(NAME, input_size=32)
    assert recipe.weights == "imagenet" and recipe.weights_sha256 == hashlib.sha256(served.data).hexdigest()
    assert recipe.label == f"{NAME}-32px"


def test_hash_mismatch_deletes_the_file_and_names_both_hashes(served):
    served.server.files[f"/keras/{FILE}"] = payload(seed=1)
    with pytest.raises(WeightsMismatchError) as err:
        ensure_weights(NAME)
    msg = str(err.value)
    assert f"md5 {md5(payload(seed=1))}, Keras records {md5(served.data)}" in msg
    assert "it was deleted" in msg and "FEATSTORE_WEIGHTS_URL" in msg and "weights import" in msg
    assert leftovers(served.path.parent) == []


@pytest.mark.parametrize("status", [404, 403, 500, 503])
def test_http_errors_are_one_line_and_leave_nothing(served, status):
    served.server.behaviour.status = status
    with pytest.raises(WeightsDownloadError) as err:
        ensure_weights(NAME)
    msg = str(err.value)
    assert f"HTTP {status}" in msg and served.server.url(f"/keras/{FILE}") in msg
    assert "--weights none" in msg and "\n" not in msg
    assert leftovers(served.path.parent) == []


def test_connection_refused(served, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/keras/{FILE}"
    register(monkeypatch, record(url, served.data))
    with pytest.raises(WeightsDownloadError, match="connection refused by 127.0.0.1"):
        ensure_weights(NAME)


def test_unresolvable_host(served, monkeypatch):
    register(monkeypatch, record(f"http://weights.invalid/keras/{FILE}", served.data))
    with pytest.raises(WeightsDownloadError, match="cannot resolve host weights.invalid"):
        ensure_weights(NAME, timeout_s=5)


def test_a_server_that_never_answers_times_out(served):
    served.server.behaviour.hang = True
    t0 = time.perf_counter()
    with pytest.raises(WeightsDownloadError, match="127.0.0.1 did not answer within 1 s"):
        ensure_weights(NAME, timeout_s=1)
    assert time.perf_counter() - t0 < 5


def test_a_stalled_download_times_out_and_the_next_run_resumes_it(served, monkeypatch):
    served.server.behaviour.stall_s = 4
    monkeypatch.setenv("FEATSTORE_DOWNLOAD_TIMEOUT_S", "1")
    t0 = time.perf_counter()
    with pytest.raises(
        WeightsDownloadError, match="stopped sending within 1 s after 0.1 MB of 0.3 MB from http"
    ):
        ensure_weights(NAME)
    assert time.perf_counter() - t0 < 4
    part = served.path.with_name(FILE + ".part")
    assert part.stat().st_size == len(served.data) // 2 and not served.path.exists()
    assert weights_status(NAME).partial_bytes == len(served.data) // 2
    served.server.behaviour.stall_s = 0
    assert ensure_weights(NAME).state == OFFICIAL
    assert served.server.behaviour.requests[-1]["range"] == f"bytes={len(served.data) // 2}-"
    assert served.path.read_bytes() == served.data and not part.exists()


def test_a_server_without_ranges_starts_over(served):
    part = served.path.with_name(FILE + ".part")
    part.write_bytes(served.data[:1000])
    served.server.behaviour.ranges = False
    assert ensure_weights(NAME).state == OFFICIAL
    assert served.path.read_bytes() == served.data


def test_a_damaged_partial_file_is_downloaded_again_from_the_start(served):
    part = served.path.with_name(FILE + ".part")
    part.write_bytes(b"\0" * 1000)  # not the file's first bytes
    lines = []
    assert ensure_weights(NAME, reporter=Reporter(lines.append)).state == OFFICIAL
    assert any("downloading it again from the start" in line for line in lines)
    assert [r["range"] for r in served.server.behaviour.requests] == ["bytes=1000-", None]
    assert served.path.read_bytes() == served.data


def test_killed_download_leaves_no_complete_looking_file_and_the_retry_resumes(served, monkeypatch):
    served.server.files[f"/keras/{FILE}"] = data = payload(2_000_000)
    served.server.behaviour.bytes_per_s = 400_000
    rec = record(served.server.url(f"/keras/{FILE}"), data)
    script = (
        "import json, featstore.backbones.fetching as w, featstore.backbones.weights as wf\n"
        "from featstore.backbones.applications import load_catalog\n"
        "c = load_catalog(); c['mobilenet_v2']['weights'] = json.loads(" + repr(json.dumps(rec)) + ")\n"
        "wf.load_catalog = lambda: c\n"
        "w.ensure_weights('mobilenet_v2')\n"
    )
    env = {**os.environ, "KERAS_HOME": str(served.home)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=TESTS)
    part = served.path.with_name(FILE + ".part")
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not served.path.exists()
    assert weights_status(NAME).state == MISSING
    served.server.behaviour.bytes_per_s = None
    register(monkeypatch, rec)
    assert ensure_weights(NAME).state == OFFICIAL
    assert served.server.behaviour.requests[-1]["range"] == f"bytes={kept}-"
    assert served.path.read_bytes() == data


def test_offline_mode_never_touches_the_network(served, monkeypatch):
    monkeypatch.setenv("FEATSTORE_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        recipe_of(NAME)
    assert "FEATSTORE_OFFLINE=1 forbids downloading" in str(err.value) and FILE in str(err.value)
    assert served.server.behaviour.requests == []


def test_mirror_over_http_and_as_a_file_folder(served, monkeypatch, tmp_path):
    served.server.files[f"/mirror/{FILE}"] = served.data
    monkeypatch.setenv("FEATSTORE_WEIGHTS_URL", served.server.url("/mirror/"))
    assert ensure_weights(NAME).state == OFFICIAL
    assert served.server.behaviour.requests[-1]["path"] == f"/mirror/{FILE}"
    served.path.unlink()
    folder = tmp_path / "carried"
    folder.mkdir()
    (folder / FILE).write_bytes(served.data)
    monkeypatch.setenv("FEATSTORE_WEIGHTS_URL", folder.as_uri())
    n = len(served.server.behaviour.requests)
    assert ensure_weights(NAME).state == OFFICIAL and served.path.read_bytes() == served.data
    assert len(served.server.behaviour.requests) == n
    served.path.unlink()
    (folder / FILE).unlink()
    with pytest.raises(WeightsDownloadError, match="does not exist"):
        ensure_weights(NAME)


def test_the_standard_proxy_variables_are_used(served, monkeypatch):
    register(monkeypatch, record(f"http://weights.invalid/keras/{FILE}", served.data))
    monkeypatch.setenv("http_proxy", served.server.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert ensure_weights(NAME).state == OFFICIAL
    assert served.server.behaviour.requests[-1] == {"path": f"/keras/{FILE}", "range": None, "proxied": True}


def test_a_file_keras_records_no_hash_for_is_checked_by_size(served, monkeypatch):
    register(monkeypatch, record(served.server.url(f"/keras/{FILE}"), served.data, algorithm=None))
    assert "Keras records no hash" in ensure_weights(NAME).check
    served.path.unlink()
    served.server.files[f"/keras/{FILE}"] = served.data + b"x"
    with pytest.raises(WeightsMismatchError, match="declares 300,001 bytes, the official file has 300,000"):
        ensure_weights(NAME)


def test_a_foreign_file_in_the_cache_is_neither_used_nor_replaced(served):
    served.path.write_bytes(b"converted elsewhere")
    with pytest.raises(WeightsMismatchError) as err:
        recipe_of(NAME)
    msg = str(err.value)
    assert (
        f"featstore weights import {served.path} --backbone {NAME} --trust" in msg and "--weights PATH" in msg
    )
    assert served.path.read_bytes() == b"converted elsewhere" and served.server.behaviour.requests == []
    assert weights_status(NAME).state == FOREIGN


def test_import_official_and_trusted_files(served, tmp_path):
    official = tmp_path / "got-it-elsewhere.h5"
    official.write_bytes(served.data)
    result = import_weights(official, NAME)
    assert result.state == OFFICIAL and result.warning is None and served.path.read_bytes() == served.data
    digest_official = recipe_of(NAME, input_size=32).digest

    converted = tmp_path / "converted.h5"
    converted.write_bytes(b"converted from another framework")
    with pytest.raises(WeightsMismatchError, match="pass --trust"):
        import_weights(converted, NAME)
    assert served.path.read_bytes() == served.data  # refused: the cache is unchanged
    result = import_weights(converted, NAME, trust=True)
    assert result.state == TRUSTED and "is not the official" in result.warning
    assert ensure_weights(NAME).state == TRUSTED
    recipe = recipe_of(NAME, input_size=32)
    assert recipe.digest != digest_official  # features of other weights never mix
    assert served.server.behaviour.requests == []

    os.utime(served.path, ns=(1, 1))  # same bytes, other mtime: still trusted after a re-read
    assert weights_status(NAME).state == TRUSTED
    served.path.write_bytes(b"changed after it was trusted")
    status = weights_status(NAME, verify=True)
    assert status.state == FOREIGN and status.check.startswith("changed since it was trusted")


def test_import_in_place_trusts_the_file_already_in_the_cache(served):
    served.path.write_bytes(b"placed by hand")
    assert import_weights(served.path, NAME, trust=True).state == TRUSTED
    assert served.path.read_bytes() == b"placed by hand"
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        import_weights(served.path.with_name("nope.h5"), NAME)


def test_a_cache_folder_that_cannot_be_written(served):
    models = served.home / "models"
    os.rmdir(models)
    models.write_text("a file where the folder should be")
    with pytest.raises(WeightsDownloadError, match="cannot write the weights folder .* set KERAS_HOME"):
        ensure_weights(NAME)


def test_disk_full_while_downloading_removes_the_partial_file(served):
    served.server.files[f"/keras/{FILE}"] = data = payload(1_000_000)
    rec = record(served.server.url(f"/keras/{FILE}"), data)
    script = (
        "import json, resource, signal, featstore.backbones.fetching as w, featstore.backbones.weights as wf\n"
        "from featstore.backbones.applications import load_catalog\n"
        "from featstore.errors import FeatstoreError\n"
        "c = load_catalog(); c['mobilenet_v2']['weights'] = json.loads(" + repr(json.dumps(rec)) + ")\n"
        "wf.load_catalog = lambda: c\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (400000, 400000))\n"
        "try:\n    w.ensure_weights('mobilenet_v2')\nexcept FeatstoreError as e:\n    print(e)\n"
    )
    env = {**os.environ, "KERAS_HOME": str(served.home)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=TESTS, capture_output=True, text=True)
    assert "no space left to write" in out.stdout and "the partial file was removed" in out.stdout
    assert leftovers(served.path.parent) == []


def test_pull_into_a_folder_then_use_it_as_a_mirror_on_an_air_gapped_machine(served, tmp_path, monkeypatch):
    carried = tmp_path / "usb"
    [r] = pull_weights([NAME], to=carried)
    assert (
        r.action == "downloaded"
        and r.bytes == len(served.data)
        and (carried / FILE).read_bytes() == served.data
    )
    assert not served.path.exists()  # Keras' cache untouched
    [r] = pull_weights([NAME], to=carried)
    assert r.action == "cached"
    # the air-gapped machine: another Keras cache, no server
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "other_home"))
    monkeypatch.setenv("FEATSTORE_WEIGHTS_URL", carried.as_uri())
    served.server.close()
    assert ensure_weights(NAME).state == OFFICIAL


def test_pull_copies_an_official_cached_file_and_refuses_names_and_all_together(served, tmp_path):
    [r] = pull_weights([NAME])
    assert r.action == "downloaded" and r.mb_per_s and served.path.exists()
    [r] = pull_weights([NAME], to=tmp_path / "out")
    assert r.action == "copied from cache"
    with pytest.raises(InvalidOptionError, match="not both"):
        pull_weights([NAME], all_=True)
    with pytest.raises(Exception, match="unknown backbone"):
        pull_weights(["alexnet"])


def test_list_weights_covers_every_backbone(served):
    rows = {s.backbone: s for s in list_weights()}
    assert len(rows) == 34 and rows["vgg16"].state == MISSING and rows["vgg16"].size == 58889256


def test_two_downloads_of_one_file_at_once_fetch_it_once(served):
    import threading

    served.server.files[f"/keras/{FILE}"] = data = payload(1_000_000)
    register_rec = record(served.server.url(f"/keras/{FILE}"), data)
    weights_mod.load_catalog()[NAME]["weights"] = register_rec
    served.server.behaviour.bytes_per_s = 2_000_000
    lines, states = [], []
    threads = [
        threading.Thread(
            target=lambda: states.append(ensure_weights(NAME, reporter=Reporter(lines.append)).state)
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert states == [OFFICIAL, OFFICIAL] and served.path.read_bytes() == data
    assert len(served.server.behaviour.requests) == 1
    assert any(line.startswith("waiting: another process") for line in lines)


def test_a_mirror_that_trickles_is_cut_off_and_the_next_run_resumes(served, monkeypatch):
    """One byte every 0.2 s never trips the read timeout; the speed floor over the timeout's window
    does (curl's --speed-limit/--speed-time), and what arrived is kept for the next run."""
    served.server.behaviour.trickle_s = 0.2
    monkeypatch.setenv("FEATSTORE_DOWNLOAD_TIMEOUT_S", "1")
    t0 = time.perf_counter()
    with pytest.raises(
        WeightsDownloadError, match=r"127.0.0.1 sent \d+ bytes in 1 s \(slower than 1024 bytes/s\)"
    ):
        ensure_weights(NAME)
    assert time.perf_counter() - t0 < 5
    part = served.path.with_name(FILE + ".part")
    assert 0 < part.stat().st_size < 20
    served.server.behaviour.trickle_s = None
    assert ensure_weights(NAME).state == OFFICIAL and served.path.read_bytes() == served.data


def test_a_mirror_that_declares_or_sends_too_much_is_refused_at_once(served, tmp_path):
    served.server.behaviour.declared_bytes = 10**12  # 1 TB for a 0.3 MB file
    with pytest.raises(
        WeightsMismatchError,
        match=r"declares 1,000,000,000,000 bytes, the official file has 300,000; refusing it",
    ):
        ensure_weights(NAME)
    assert leftovers(served.path.parent) == []
    from featstore.backbones.downloads import fetch

    served.server.behaviour.declared_bytes = None
    served.server.files["/big"] = payload(1_000_000)
    part = tmp_path / "big.part"
    with pytest.raises(WeightsMismatchError, match="declares 1,000,000 bytes, the official file has 300,000"):
        fetch(served.server.url("/big"), part, expected_size=len(served.data))
    assert not part.exists()


def test_a_redirect_loop_is_one_clear_line(served):
    served.server.behaviour.redirect_loop = True
    with pytest.raises(WeightsDownloadError) as err:
        ensure_weights(NAME)
    assert "redirects in a loop (or more than 10 times); check the address of the mirror" in str(err.value)
    assert "30x" not in str(err.value) and len(str(err.value).splitlines()) == 1
