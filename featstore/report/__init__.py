"""`featstore report`: every recorded run side by side, as rows, Markdown or one HTML page.

Modules: `model` (rows from the typed run records and the store's head folders), `searches`
(sweeps' rows and grids, few-shot curves), `figures` (backbone parameters and GFLOPs),
`markdown` (the table columns and cells, the Markdown report), `html` (the page),
`thumbnails` (misclassified test images as small pictures). Imports `heads.registry`
(parameter counts), `backbones` (catalog figures), `store`, `files` and `plots`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ReportRow": "model",
        "Report": "model",
        "build_report": "model",
        "render_markdown": "markdown",
        "render_html": "html",
    },
)
