"""The HTML report rendered by real headless Chromium: a screenshot that is not blank, and the
DOM after load holding the sortable table and every picture as a decodable data: URI."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import make_class_folders
from run_log_fixtures import FINETUNE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
#: Appended to a copy of the page: after load, record each image's decoded size and what a
#: click on the "wall s" header does to the first table, where --dump-dom can read it.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = {images: Array.from(document.images).map(function (i) {
    return [i.className, i.naturalWidth, i.naturalHeight, i.complete]; })};
  var table = document.querySelector("table.sortable");
  var th = Array.from(table.tHead.rows[0].cells).find(function (c) { return c.textContent === "wall s"; });
  th.click();
  out.sorted = Array.from(table.tBodies[0].rows).map(function (r) {
    return r.cells[th.cellIndex].getAttribute("data-v"); });
  var pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script></body>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.probe, self._in_probe = [], [], "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("class"))
        elif tag == "img":
            self.images.append((a.get("class"), a.get("src", "")))
        self._in_probe = tag == "pre" and a.get("id") == "probe"

    def handle_data(self, data):
        if self._in_probe:
            self.probe += data


def _not_blank(png: bytes) -> tuple[int, int]:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.width > 0 and img.height > 0
    assert any(lo < hi for lo, hi in img.getextrema()), "a single-colour image"
    return img.size


@pytest.fixture
def report_page(tmp_path, tiny_onnx) -> Path:
    """report.html of a real store: one extraction, two heads, and a logged fine-tune run."""
    from conftest import via_store

    extract = via_store("extract")
    from conftest import via_store

    fit_head = via_store("fit_head")
    from featstore.options import JobOptions
    from featstore.report.build import build_report
    from featstore.report.html import render_html

    store = tmp_path / "store"
    photos = make_class_folders(tmp_path / "pets", ("cat", "dog", "owl"), n_per_class=10)
    job = JobOptions(store=str(store), emissions=False)
    extract(str(photos), str(tiny_onnx), job=job)
    for kind in ("logistic", "knn"):
        fit_head(kind, ["pets@tiny"], job=job)
    with open(store / "runs.jsonl", "a") as f:
        f.write(json.dumps({**FINETUNE, "dataset": "pets"}) + "\n")
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(store)))
    return page


def test_report_renders_in_headless_chromium(tmp_path, report_page):
    shot = tmp_path / "report.png"
    out = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report_page.as_uri())
    assert out.returncode == 0 and shot.is_file() and shot.stat().st_size > 0, out.stderr[-2000:]
    assert _not_blank(shot.read_bytes()) == (1280, 2000)

    probed = tmp_path / "probed.html"
    probed.write_text(report_page.read_text().replace("</body>", PROBE))
    out = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Page()
    dom.feed(out.stdout)
    assert dom.tables == ["sortable"]
    # two scatter plots, a confusion matrix per head, the heads' reliability diagram, the
    # fine-tune's learning curves, and the heads' misclassified test images as JPEG thumbnails
    pictures = sorted(c for c, _ in dom.images if c != "thumb")
    assert pictures == ["cm", "cm", "curve", "plot", "plot", "plot"]
    assert "reliability on test" in report_page.read_text()
    for cls, src in dom.images:
        kind = "jpeg" if cls == "thumb" else "png"
        assert src.startswith(f"data:image/{kind};base64,")
        _not_blank(base64.b64decode(src.split(",", 1)[1]))
    probe = json.loads(dom.probe)
    assert all(w > 0 and h > 0 and done for _, w, h, done in probe["images"]), probe
    seconds = [float(v) for v in probe["sorted"]]
    assert seconds == sorted(seconds) and len(seconds) == 4  # the click sorted the table
