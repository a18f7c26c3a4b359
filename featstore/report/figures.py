"""A backbone's parameters and GFLOPs per image for report rows, from the recipe stored with its
feature set, as the recipe's source counts them."""

from __future__ import annotations

from featstore.backbones.recipes import BackboneRecipe, source_of
from featstore.errors import FeatstoreError
from featstore.store.layout import StoreLayout


def sum_known(values):
    """Sum of `values`, None when any is unknown (floats rounded to 12 significant digits)."""
    if any(v is None for v in values):
        return None
    total = sum(values)
    return total if isinstance(total, int) else float(f"{total:.12g}")


def recipe_figures(recipe: dict | None) -> tuple[int | None, float | None]:
    """(parameters, GFLOPs per image) of `recipe`'s backbone; (None, None) when its source does not
    know them."""
    if not recipe:
        return None, None
    try:
        r = BackboneRecipe.from_dict(recipe)
        return source_of(r).figures(r)
    except (TypeError, KeyError, FeatstoreError):
        return None, None


class Recipes:
    """The recipe of each feature set: its extract run's, else its file's (read once), else None."""

    def __init__(self, layout: StoreLayout, recorded: dict[str, dict]):
        self.layout, self._known = layout, dict(recorded)

    def of(self, feature_set: str) -> dict | None:
        """The recipe of `feature_set`, None when neither the run log nor the file has it."""
        if feature_set not in self._known:
            self._known[feature_set] = self._from_file(feature_set)
        return self._known[feature_set]

    def _from_file(self, feature_set: str) -> dict | None:
        from featstore.store.featuresets import FeatureSetReader

        try:
            with FeatureSetReader(self.layout.feature_set(feature_set)) as reader:
                return reader.attrs.get("recipe")
        except (FeatstoreError, OSError):
            return None

    def figures(self, sets: list[str]) -> tuple[int | None, float | None]:
        """(parameters, GFLOPs per image) of feature sets `sets` joined side by side; None when
        one is unknown."""
        pairs = [recipe_figures(self.of(s)) for s in sets]
        return sum_known([p for p, _ in pairs]), sum_known([g for _, g in pairs])
