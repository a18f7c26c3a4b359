"""What a report row shows that the run log does not hold: a backbone's parameters and GFLOPs
(from the catalog), and sums of figures that may be unknown. A head's trainable parameters
come from its kind (`featstore.heads.registry.head_params`).

Imports `backbones.catalog` and `backbones.registry` (inside `backbone_figures`) only.
"""

from __future__ import annotations

import re

#: What follows a registry name in a backbone label (see `BackboneRecipe.label`; the precision
#: suffix is `precision.precision_label`'s).
_LABEL_REST = re.compile(
    r"(?:-(?P<px>\d+)px)?(?:-random|-w[0-9a-f]{8})?(?P<layer>\.[^-]+)?(?:-max)?(?:-int8|-fp16)?"
)


def backbone_figures(label: str) -> tuple[int | None, float | None]:
    """Return (parameters, GFLOPs per image) of a registry backbone label such as `vgg16-160px`.

    GFLOPs are the catalog's at the native input size scaled by the input area; a label that is
    not a whole registry network (a user file, an intermediate `--layer`) gives (None, None).
    """
    from featstore.backbones.catalog import load_catalog
    from featstore.backbones.registry import available_backbones

    catalog = load_catalog()
    for name in sorted(available_backbones(), key=len, reverse=True):
        if not label.startswith(name):
            continue
        m = _LABEL_REST.fullmatch(label[len(name) :])
        entry = catalog.get(name)
        if m is None or m["layer"] or not entry:
            return None, None
        scale = (int(m["px"]) / entry["input_size"]) ** 2 if m["px"] else 1.0
        return entry["n_params"], round(entry["gflops"] * scale, 3)
    return None, None


def sum_known(values):
    """Sum of `values`, None when any is unknown (floats rounded to 12 significant digits)."""
    if any(v is None for v in values):
        return None
    total = sum(values)
    return total if isinstance(total, int) else float(f"{total:.12g}")


def figures_of(labels: list[str]) -> tuple[int | None, float | None]:
    """(parameters, GFLOPs per image) of backbones joined side by side; None when one is unknown."""
    pairs = [backbone_figures(b) for b in labels]
    return sum_known([p for p, _ in pairs]), sum_known([g for _, g in pairs])
