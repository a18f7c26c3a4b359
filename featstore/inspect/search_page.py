"""A search's answer as one self-contained HTML page: each query beside its matches, as
thumbnails (JPEG, embedded), with similarity, label and path."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from featstore.inspect.search import SearchResult

THUMB_PX = 128


def thumbnail(path: Path, px: int = THUMB_PX) -> str | None:
    """A data URI of `path` as a JPEG at most `px` on its longer side; None when unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((px, px))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
    except (OSError, ValueError, SyntaxError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(src: str | None, caption: str) -> str:
    img = f'<img src="{src}" alt="">' if src else '<div class="missing">unreadable</div>'
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def render_search(result: SearchResult) -> str:
    """The HTML page of `result` (stored images are read from the set's data root)."""
    root = Path(result.root) if result.root else None
    e = html.escape
    sections = []
    for q in result.queries:
        cells = [_figure(thumbnail(Path(q["path"])), f"<b>query</b><br>{e(Path(q['path']).name)}")]
        for m in q["matches"]:
            src = thumbnail(root / m["path"]) if root else None
            caption = f"#{m['rank']} &middot; {m['similarity']:.3f}<br>{e(str(m['label'] or '-'))}<br>{e(m['path'])}"
            cells.append(_figure(src, caption))
        sections.append(f"<section><h2>{e(q['path'])}</h2><div class='row'>{''.join(cells)}</div></section>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:1.5em}figure{display:inline-block;margin:0 .6em .6em 0;"
        f"width:{THUMB_PX}px;vertical-align:top;font-size:12px;word-break:break-all}}img{{max-width:{THUMB_PX}px;"
        f"max-height:{THUMB_PX}px}}.missing{{width:{THUMB_PX}px;height:{THUMB_PX}px;background:#eee}}"
        "h2{font-size:14px;font-weight:normal;color:#555}figure:first-child{outline:2px solid #36c}"
    )
    title = f"search in {e(result.feature_set)}"
    head = (
        f"<h1>{title}</h1><p>{result.k} most similar of {result.n_rows} images per query "
        f"(cosine of the features, {result.method} search, {result.seconds:.2f} s)</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
        f"</head><body>{head}{''.join(sections)}</body></html>\n"
    )
