"""The added-backbone source: `--backbone NAME` for a network added to the store with
`featstore backbones add`, exported as its stored network with the preprocessing and pooling
of its card folded in (see `adding`)."""

from __future__ import annotations

import time
from pathlib import Path

from featstore.backbones.adding import find_added, folded_network
from featstore.backbones.export import write_export
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, BackboneSource, register_source
from featstore.data.options import size_text
from featstore.errors import UnknownBackboneError
from featstore.reporter import Reporter
from featstore.store.layout import resolve_store


def _card(name: str, layout):
    card = find_added(layout, name)
    if card is None:
        raise UnknownBackboneError(f"no backbone {name!r} was added to this store")
    return card


def _recipe(opts: BackboneOptions, layout, reporter: Reporter) -> BackboneRecipe:
    layout = resolve_store(layout)
    card = _card(opts.backbone, layout)
    if opts.input_size and (int(opts.input_size), None) != (card.input_size, card.input_width):
        raise UnknownBackboneError(
            f"{card.name} was added for {size_text(card.size)} px images; add the file again under another "
            "name for another size"
        )
    if opts.layer:
        raise UnknownBackboneError(
            f"{card.name} is an added network: --layer does not apply (use --output at add)"
        )
    if opts.pooling != "avg" and opts.pooling != card.pooling:
        raise UnknownBackboneError(
            f"{card.name} was added with pooling {card.pooling}; add the file again under another name "
            f"for pooling {opts.pooling}"
        )
    return BackboneRecipe(
        kind="added",
        name=card.name,
        input_size=card.input_size,
        input_width=card.input_width,
        weights="file",
        weights_sha256=card.sha256,
        layer=None,
        pooling=card.pooling,
        source=str(layout.root),  # the store holding the card
        preprocessing=card.preprocessing,
        output=card.output,
    )


def _export(recipe: BackboneRecipe, out: Path, reporter: Reporter):
    layout = resolve_store(recipe.source)
    card = _card(recipe.name, layout)
    if card.sha256 != recipe.weights_sha256:
        raise UnknownBackboneError(f"{recipe.name} was added again since these features were made")
    t0 = time.perf_counter()
    reporter.log(f"folding the preprocessing and pooling of {card.name} into its network (once)")
    model = folded_network(card, layout)
    return write_export(recipe, out, model, card.n_features, None, time.perf_counter() - t0)


def _claims(value: str, layout) -> bool:
    return (
        "/" not in value
        and not value.endswith((".onnx", ".keras"))
        and find_added(resolve_store(layout), value) is not None
    )


def _figures(recipe: BackboneRecipe) -> tuple:
    card = find_added(resolve_store(recipe.source), recipe.name)
    return (None, None) if card is None else (card.n_params, card.gflops)


register_source(
    BackboneSource(
        "added",
        "a backbone added to the store",
        claims=_claims,
        recipe=_recipe,
        export=_export,
        figures=_figures,
        hint="a name given with `featstore backbones add`",
    )
)
