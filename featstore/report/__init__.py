"""`featstore report`: every recorded run side by side (`build_report`), as Markdown
(`render_markdown`) or one self-contained HTML page (`render_html`)."""
