"""Where things live in a store root; pure path arithmetic, no I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE = "store"
#: The dtypes features may be stored in.
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class StoreLayout:
    """The folders and files under one store root."""

    root: Path

    @property
    def backbones(self) -> Path:
        """Folder of exported ONNX backbones."""
        return self.root / "backbones"

    @property
    def features(self) -> Path:
        """Folder of feature set files (`<dataset>@<backbone>.h5`)."""
        return self.root / "features"

    @property
    def heads(self) -> Path:
        """Folder of fitted heads."""
        return self.root / "heads"

    @property
    def finetune(self) -> Path:
        """Folder of fine-tune runs."""
        return self.root / "finetune"

    @property
    def datasets(self) -> Path:
        """Folder for datasets featstore writes itself (the demo)."""
        return self.root / "datasets"

    @property
    def runs(self) -> Path:
        """The run log, one JSON object per line."""
        return self.root / "runs.jsonl"

    @property
    def emissions(self) -> Path:
        """Scratch folder for codecarbon's output."""
        return self.root / ".emissions"

    def feature_set(self, name: str) -> Path:
        """Path of the HDF5 file of feature set `name` (`dataset@backbone`)."""
        return self.features / f"{name}.h5"


def resolve_store(store: StoreLayout | str | os.PathLike | None = None) -> StoreLayout:
    """Return the store layout: `store` if given (a layout is returned as it is), else
    $FEATSTORE_HOME, else ./store; the root is made absolute, `~` expanded."""
    if isinstance(store, StoreLayout):
        return store
    root = store if store is not None else os.environ.get("FEATSTORE_HOME") or DEFAULT_STORE
    return StoreLayout(Path(root).expanduser().absolute())
