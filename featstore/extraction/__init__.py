"""`featstore extract`: images -> backbone -> feature set, resumable and cached by content.

Modules: `job` (`extract`, the one call the command makes), `options` (`ExtractOptions`, and
all of a run's options gathered and checked), `pipeline` (the read-decode-compute loop),
`rows` (the rows written and what changed), `result` (`ExtractResult` and its run record).
Imports `inference`, `backbones`, `store`, `data`, `jobs`, `runtime` and `emissions`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "extract": "job",
        "ExtractResult": "result",
        "ExtractOptions": "options",
        "extract_settings": "options",
    },
)
