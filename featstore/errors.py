"""Every error featstore raises on purpose; the CLI turns each into one line and exit code 1.

`InvalidOptionError` names the library parameter (`batch_size`); the CLI maps it to its flag.
"""

from __future__ import annotations


class FeatstoreError(Exception):
    """Base class: a user or data error with a message that says what to do."""


class InvalidOptionError(FeatstoreError):
    """An option value that cannot be used; `param` is the keyword's name, as in
    `batch_size: must be a number or auto, not 'x'` (the CLI prints the flag instead)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class MissingDependencyError(FeatstoreError):
    """An optional package is needed for this step and is not installed."""


class UnknownBackboneError(FeatstoreError):
    """A backbone name that is not in the registry and is not a model file."""


class WeightsError(FeatstoreError):
    """Pretrained weights could not be found, fetched, checked or stored."""


class WeightsNotFoundError(WeightsError):
    """Weights were asked for but are not cached and may not (or could not) be fetched."""


class WeightsDownloadError(WeightsError):
    """A weight file could not be downloaded: network, HTTP status, timeout, disk, permissions."""


class WeightsMismatchError(WeightsError):
    """A weight file's hash or size is not the one the catalog records (and it was not trusted)."""


class ExportError(FeatstoreError):
    """A backbone could not be exported to ONNX, or the export disagrees with TensorFlow."""


class DeviceError(FeatstoreError):
    """The requested execution device (cuda, tensorrt) is not usable here."""


class DatasetError(FeatstoreError):
    """The image folder or manifest cannot be read as a dataset."""


class StoreError(FeatstoreError):
    """A store file is missing, damaged or does not match the request."""


class StoreMismatchError(StoreError):
    """A feature set was made by another backbone export than the one requested."""


class StoreLockedError(StoreError):
    """Another process is writing the same feature set."""


class UnknownFeatureSetError(StoreError):
    """No feature set of that name in the store."""


class UnknownHeadError(StoreError):
    """No head of that id in the store."""


class UnknownRunError(StoreError):
    """No fine-tune run of that id in the store."""


class HeadError(FeatstoreError):
    """A head kind or option that cannot be used, or a head name that is taken."""


class OutputExistsError(FeatstoreError):
    """An output file exists already and overwriting it was not asked for."""
