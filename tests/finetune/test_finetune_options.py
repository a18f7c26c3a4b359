"""The options of `featstore finetune` as objects: defaults in one place (the CLI reads them),
bad values named by keyword, the Store's keywords, and the config a run folder stores (the
format written before the options were objects still reads)."""

from __future__ import annotations

import pytest

from featstore.data.options import DecodeOptions, SplitOptions
from featstore.errors import InvalidOptionError
from featstore.finetune.options import (
    FinetuneConfig,
    FinetuneOptions,
    NetworkOptions,
    TrainingOptions,
    augment_ops,
)
from featstore.options import JobOptions

#: meta.json["config"] of a run written before the options were objects.
OLD_CONFIG = {
    "backbone": "simple-cnn",
    "data": "/data/pets",
    "dataset": "pets",
    "weights": None,
    "input_size": 32,
    "resize": "crop",
    "epochs": 8,
    "warmup_epochs": 2,
    "unfreeze": None,
    "lr": 0.001,
    "fine_lr": 0.0001,
    "batch_size": 4,
    "augment": ["flip", "zoom"],
    "dropout": 0.2,
    "head_units": None,
    "label_smoothing": 0.1,
    "class_weights": True,
    "patience": 99,
    "depth": 3,
    "test_size": 0.2,
    "val_size": 0.1,
    "seed": 3,
    "split": "hash",
}


def test_a_stored_config_of_before_reads_and_writes_back_the_same_keys():
    session = FinetuneOptions(decode=DecodeOptions(n_workers=2), device="cpu")
    config = FinetuneConfig.from_dict(OLD_CONFIG, session)
    o = config.options
    assert (config.backbone, config.data, config.dataset) == ("simple-cnn", "/data/pets", "pets")
    assert (o.training.epochs, o.training.batch_size, o.training.patience) == (8, 4, 99)
    assert o.training.augment == ("flip", "zoom") and o.training.class_weights
    assert o.split == SplitOptions("hash", 0.2, 0.1, 3) and o.network.input_size == 32
    assert (o.decode.resize, o.decode.n_workers, o.device) == (
        "crop",
        2,
        "cpu",
    )  # threads, device: the session's
    again = config.to_dict()
    assert {k: again[k] for k in OLD_CONFIG} == OLD_CONFIG and set(again) - set(OLD_CONFIG) == {"decoder"}
    assert FinetuneConfig.from_dict({**again, "from_a_later_version": 1}, session) == config


def test_the_stores_keywords_build_the_objects(tmp_path, monkeypatch):
    import featstore.finetune.run
    from featstore import Store

    seen = {}
    monkeypatch.setattr(featstore.finetune.run, "finetune", lambda data, backbone, **kw: seen.update(kw))
    store = Store(tmp_path / "s", emissions=False)
    store.finetune("photos", "lenet", epochs=3, augment="rotate, FLIP", resize="pad", seed=2, name="r")
    o = seen["options"]
    assert o.training == TrainingOptions(epochs=3, augment="rotate, FLIP").check()
    assert o.decode.resize == "pad" and o.split.seed == 2 and o.network == NetworkOptions()
    assert seen["name"] == "r" and seen["job"].emissions is False
    with pytest.raises(InvalidOptionError, match="^epoch: unknown option; valid ones: augment, batch_size"):
        store.finetune("photos", "lenet", epoch=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs: must be at least 1, not 0"),
        ({"warmup_epochs": -1}, "warmup_epochs: must be 0 or more, not -1"),
        ({"fine_lr": 0.0}, "fine_lr: must be positive, not 0.0"),
        ({"label_smoothing": 1.0}, "label_smoothing: must be in [0, 1), not 1.0"),
        ({"dropout": -0.1}, "dropout: must be in [0, 1), not -0.1"),
        ({"depth": 9}, "depth: must be between 1 and 8, not 9"),
        ({"head_units": -1}, "head_units: must be 0 or more, not -1"),
        ({"input_size": 0}, "input_size: must be at least 1 px, not 0"),
        ({"unfreeze": "most"}, "unfreeze: must be all, a number of top layers"),
        ({"augment": "flip,blur"}, "augment: unknown augmentation 'blur' in 'flip,blur'; choose from flip"),
        ({"resize": "fit"}, "resize: must be one of squash, crop, pad, not 'fit'"),
        ({"val_size": 1.5}, "val_size: must be a fraction in [0, 1), not 1.5"),
        ({"device": "tensorrt"}, "device: must be one of auto, cpu, cuda for finetune, not 'tensorrt'"),
    ],
)
def test_bad_values_name_their_keyword(tmp_path, kwargs, message):
    from featstore import Store

    with pytest.raises(InvalidOptionError) as err:
        Store(tmp_path / "s", emissions=False).finetune("photos", "lenet", **kwargs)
    assert str(err.value).startswith(message) and err.value.param == next(iter(kwargs))
    assert not (tmp_path / "s").exists()


def test_augment_ops_keep_the_applied_order():
    assert augment_ops("zoom,flip") == augment_ops(["FLIP", " zoom"]) == ("flip", "zoom")
    assert augment_ops(None) == augment_ops("") == ()


def test_the_cli_defaults_are_the_dataclass_defaults():
    import inspect

    from featstore_cli.finetune import finetune

    defaults = {p.name: p.default for p in inspect.signature(finetune).parameters.values()}
    for cls in (NetworkOptions, TrainingOptions, SplitOptions):
        for name, value in cls().to_dict().items():
            if name in defaults and name != "augment":
                assert defaults[name] == value, name
    assert defaults["resize"] == DecodeOptions.resize and defaults["workers"] == DecodeOptions.n_workers
    assert defaults["device"] == FinetuneOptions.device and defaults["emissions"] == JobOptions.emissions
