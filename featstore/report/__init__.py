"""`featstore report`: every recorded run side by side (`build_report`), as Markdown
(`render_markdown`) or one self-contained HTML page (`render_html`)."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ReportRow": "model",
        "Report": "model",
        "build_report": "build",
        "render_markdown": "markdown",
        "render_html": "html",
    },
)
