"""The Keras networks `featstore finetune` trains, and which layers train in each phase:

    pixels (N, S, S, 3) uint8 -> augment (training only) -> backbone -> head -> probabilities

`backbone` is one nested model taking uint8 pixels and returning pooled features (N, D): what
`backbone.onnx` holds. The head is dropout, an optional hidden layer and a softmax layer.
"""

from __future__ import annotations

import functools
import math

from featstore.data.augment import (
    CONTRAST_RANGE,
    MAX_ROTATE_DEG,
    MAX_TRANSLATE_FRAC,
    ZOOM_RANGE,
)
from featstore.deps import require
from featstore.errors import UnknownBackboneError

#: The small networks trained from scratch (not in the backbone registry).
SCRATCH_NETWORKS = ("simple-cnn", "lenet")
#: Default input size of the scratch networks, and the smallest each can take.
SCRATCH_INPUT_PX = {"simple-cnn": 128, "lenet": 32}
LENET_MIN_PX = 16
#: BatchNormalization momentum when training from scratch. Keras applications use 0.999, made
#: for long ImageNet runs: after a few epochs the moving statistics would still be their initial
#: values and the network would score at chance at inference.
SCRATCH_BN_MOMENTUM = 0.9
BACKBONE_LAYER = "backbone"
AUGMENT_LAYER = "augment"
PROBS_LAYER = "probs"
#: Registered Keras name of the pixel preprocessing layer (`featstore.backbones.export`).
PREPROCESS_NAME = "featstore>PixelPreprocess"


@functools.lru_cache(maxsize=1)
def custom_layers() -> dict:
    """Register featstore's own Keras layers (needed before loading a saved network); return them."""
    from featstore.backbones.export import _preprocess_layer_class

    keras = require("keras")
    preprocess = _preprocess_layer_class()

    @keras.saving.register_keras_serializable(package="featstore")
    class PixelAugment(keras.layers.Layer):
        """Random flips, rotations, zooms, shifts and contrast of uint8 pixels in training only, the
        ranges of `featstore.data.augment`; the identity at inference."""

        def __init__(self, ops=(), seed: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.ops = [str(op) for op in ops]
            self.seed = int(seed)
            L = keras.layers
            make = {
                "flip": lambda s: L.RandomFlip("horizontal", seed=s),
                "rotate": lambda s: L.RandomRotation(MAX_ROTATE_DEG / 360.0, fill_mode="reflect", seed=s),
                "zoom": lambda s: L.RandomZoom(
                    (ZOOM_RANGE[0] - 1.0, ZOOM_RANGE[1] - 1.0), fill_mode="reflect", seed=s
                ),
                "translate": lambda s: L.RandomTranslation(
                    MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC, fill_mode="reflect", seed=s
                ),
                "contrast": lambda s: L.RandomContrast(CONTRAST_RANGE[1] - 1.0, value_range=(0, 255), seed=s),
            }
            self.steps = [make[op](self.seed + i) for i, op in enumerate(self.ops)]

        def build(self, input_shape):
            for step in self.steps:
                step.build(input_shape)
            self.built = True

        def call(self, x, training=None):
            if not training or not self.steps:
                return x
            ops = keras.ops
            y = ops.cast(x, "float32")
            for step in self.steps:
                y = step(y, training=True)
            return ops.cast(ops.clip(ops.round(y), 0.0, 255.0), "uint8")

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "ops": list(self.ops), "seed": self.seed}

    return {"PixelPreprocess": preprocess, "PixelAugment": PixelAugment}


def scratch_min_px(network: str, depth: int) -> int:
    """Smallest input (px) `network` can take: each conv block of simple-cnn halves the size."""
    return LENET_MIN_PX if network == "lenet" else 2**depth


def build_scratch_backbone(network: str, size_px: int, depth: int = 3):
    """Build simple-cnn or lenet: (N, S, S, 3) uint8 -> (N, D) float32 features, named "backbone",
    pixels scaled to [-1, 1] inside.

    simple-cnn: `depth` blocks of Conv 3x3 (16, 32, 64, ... filters) + 2x2 max pooling, then
    global average pooling (D = 16 * 2**(depth - 1)). lenet: LeNet-5 (D = 84).
    """
    keras = require("keras")
    L = keras.layers
    if network not in SCRATCH_NETWORKS:
        raise UnknownBackboneError(f"unknown scratch network {network!r}; use {', '.join(SCRATCH_NETWORKS)}")
    if size_px < scratch_min_px(network, depth):
        raise UnknownBackboneError(
            f"{network} needs an input of at least {scratch_min_px(network, depth)} px"
            + (f" with depth {depth}" if network == "simple-cnn" else "")
            + f", not {size_px}"
        )
    inputs = keras.Input((size_px, size_px, 3), dtype="uint8", name="pixels")
    x = custom_layers()["PixelPreprocess"]("tf", name="preprocess")(inputs)
    if network == "simple-cnn":
        for i in range(depth):
            x = L.Conv2D(16 * 2**i, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
            x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
    else:
        x = L.Conv2D(6, 5, activation="relu", name="conv1")(x)
        x = L.AveragePooling2D(2, name="pool1")(x)
        x = L.Conv2D(16, 5, activation="relu", name="conv2")(x)
        x = L.AveragePooling2D(2, name="pool2")(x)
        x = L.Flatten(name="flatten")(x)
        x = L.Dense(120, activation="relu", name="fc1")(x)
        x = L.Dense(84, activation="relu", name="fc2")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


def as_backbone(model):
    """Name a (uint8 pixels -> features) Keras model "backbone" and return it."""
    model.name = BACKBONE_LAYER
    return model


def build_classifier(
    backbone,
    n_classes: int,
    *,
    augment: list[str],
    dropout: float,
    head_units: int,
    frozen_bn: bool,
    seed: int,
):
    """Put augmentation and a head around `backbone`: (N, S, S, 3) uint8 -> (N, C) probabilities.
    With `frozen_bn` the backbone's BatchNormalization keeps its moving statistics throughout."""
    keras = require("keras")
    L = keras.layers
    keras.utils.set_random_seed(seed)
    size = backbone.input.shape[1]
    inputs = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    x = inputs
    if augment:
        x = custom_layers()["PixelAugment"](augment, seed=seed, name=AUGMENT_LAYER)(x)
    x = backbone(x, training=False) if frozen_bn else backbone(x)
    x = L.Dropout(dropout, seed=seed, name="head_dropout")(x)
    if head_units:
        x = L.Dense(head_units, activation="relu", name="head_dense")(x)
        x = L.Dropout(dropout, seed=seed + 1, name="head_dropout2")(x)
    outputs = L.Dense(n_classes, activation="softmax", dtype="float32", name=PROBS_LAYER)(x)
    return keras.Model(inputs, outputs, name="classifier")


def inference_models(model):
    """Return (classifier, backbone) of a trained network without augmentation, sharing its layers:
    (N, S, S, 3) uint8 -> (N, C) probabilities, and -> (N, D) float32 pooled features."""
    keras = require("keras")
    backbone = model.get_layer(BACKBONE_LAYER)
    size = backbone.input.shape[1]
    inputs = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    x = backbone(inputs, training=False)
    seen = False
    for layer in model.layers:  # the head: every layer after the backbone, in order
        if seen:
            x = layer(x, training=False)
        seen = seen or layer is backbone
    return keras.Model(inputs, x, name="classifier_inference"), backbone


def tunable_layers(backbone, top: bool = True) -> list:
    """Leaf layers of `backbone` in order, without inputs, the pixel preprocessing (recognised by
    its registered name) and the final pooling: what `unfreeze` counts from the top."""
    keras = require("keras")
    out = []
    for layer in backbone.layers:
        if isinstance(layer, keras.Model):
            out.extend(tunable_layers(layer, top=False))
        elif not _is_input_or_preprocess(layer) and not (top and layer.name == "pool"):
            out.append(layer)
    return out


def _is_input_or_preprocess(layer) -> bool:
    keras = require("keras")
    if isinstance(layer, keras.layers.InputLayer):
        return True
    return keras.saving.get_registered_name(type(layer)) == PREPROCESS_NAME


def set_phase(model, phase: str, n_unfreeze: int = 0) -> list[str]:
    """Set which layers train: "head" (backbone frozen), "fine-tune" (the top `n_unfreeze` tunable
    layers and the head; BatchNormalization frozen) or "scratch" (all; BatchNormalization
    momentum at most `SCRATCH_BN_MOMENTUM`); return the backbone layers that train."""
    keras = require("keras")
    backbone = model.get_layer(BACKBONE_LAYER)
    for layer in model.layers:
        if layer is not backbone:
            layer.trainable = True
    if phase == "scratch":
        backbone.trainable = True
        for layer in tunable_layers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = min(layer.momentum, SCRATCH_BN_MOMENTUM)
        return [layer.name for layer in tunable_layers(backbone) if layer.weights]
    if phase == "head" or n_unfreeze == 0:
        backbone.trainable = False
        return []
    backbone.trainable = True
    layers = tunable_layers(backbone)
    top = set(map(id, layers[len(layers) - n_unfreeze :]))
    trained = []
    for layer in layers:
        on = id(layer) in top and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = on
        if on and layer.weights:
            trained.append(layer.name)
    return trained


def count_params(model) -> tuple[int, int]:
    """Return (total, trainable) parameter counts of `model`, as its trainable flags are now."""
    total = sum(math.prod(w.shape) for w in model.weights)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return total, trainable
