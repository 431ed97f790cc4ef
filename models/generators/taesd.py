"""The tiny FLUX.2 autoencoder (TAESD family, ``taef2``; MIT, madebyollin/taesd) rebuilt from standard Keras layers.

``../shared/weights/taesd/README.md`` gives the layers, key names and value ranges this follows. A round trip
(``reconstruct``) keeps a photo's content and adds the latent decoder's traces: the aligned fake of Rajan et al.
(ICLR 2025). Images are RGB float32 in [0, 1] with sides that are multiples of 8; the GroupNorm branch takes
statistics over the whole feature map, so whole images are encoded, never tiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "taesd"
CHANNELS = 64
# The blocks that carry the GroupNorm branch in taef2 (encoder indices 11-13, decoder 3-5).
ENCODER_LAYOUT: tuple[str, ...] = ("conv", "block", "down", "block", "block", "block", "down", "block", "block",
                                   "block", "down", "gblock", "gblock", "gblock", "conv")
DECODER_LAYOUT: tuple[str, ...] = ("clamp", "conv", "relu", "gblock", "gblock", "gblock", "up", "convnb", "block",
                                   "block", "block", "up", "convnb", "block", "block", "block", "up", "convnb",
                                   "block", "conv")


def _torch_conv(weights: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    """Keras kernel (and bias when stored) from a torch ``(out, in, kh, kw)`` convolution."""
    kernel = weights[f"{key}.weight"].astype(np.float32).transpose(2, 3, 1, 0)
    bias = weights.get(f"{key}.bias")
    return [kernel] if bias is None else [kernel, bias.astype(np.float32)]


def _conv(x: Any, filters: int, weights: dict[str, np.ndarray], key: str, stride: int = 1) -> Any:
    import keras

    loaded = _torch_conv(weights, key)
    size = loaded[0].shape[0]
    if size > 1:
        # Upstream pads one pixel on every side; Keras' "same" at stride 2 would pad only bottom-right.
        x = keras.layers.ZeroPadding2D(size // 2)(x)
    layer = keras.layers.Conv2D(filters, size, strides=stride, padding="valid", use_bias=len(loaded) == 2)
    out = layer(x)
    layer.set_weights(loaded)
    return out


def _block(x: Any, weights: dict[str, np.ndarray], index: int, grouped: bool) -> Any:
    import keras

    if grouped:
        # taef2's mid-block branch: x + conv1x1(ReLU(GroupNorm(conv1x1(x)))).
        branch = _conv(x, 256, weights, f"{index}.pool.0")
        norm = keras.layers.GroupNormalization(groups=4, epsilon=1e-5)
        branch = norm(branch)
        norm.set_weights([weights[f"{index}.pool.1.weight"].astype(np.float32),
                          weights[f"{index}.pool.1.bias"].astype(np.float32)])
        branch = keras.layers.ReLU()(branch)
        x = keras.layers.Add()([x, _conv(branch, CHANNELS, weights, f"{index}.pool.3")])
    y = keras.layers.ReLU()(_conv(x, CHANNELS, weights, f"{index}.conv.0"))
    y = keras.layers.ReLU()(_conv(y, CHANNELS, weights, f"{index}.conv.2"))
    y = _conv(y, CHANNELS, weights, f"{index}.conv.4")
    return keras.layers.ReLU()(keras.layers.Add()([y, x]))


def _stack(inputs: Any, layout: tuple[str, ...], weights: dict[str, np.ndarray], last: int) -> Any:
    import keras

    x = inputs
    for index, kind in enumerate(layout):
        if kind in ("block", "gblock"):
            x = _block(x, weights, index, kind == "gblock")
        elif kind == "down":
            x = _conv(x, CHANNELS, weights, str(index), stride=2)
        elif kind in ("conv", "convnb"):
            x = _conv(x, last if index == len(layout) - 1 else CHANNELS, weights, str(index))
        elif kind == "up":
            x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
        elif kind == "relu":
            x = keras.layers.ReLU()(x)
        elif kind == "clamp":
            # 3 * tanh(x / 3): bounds the latent to (-3, 3), as upstream does before decoding.
            x = keras.layers.Rescaling(3.0)(keras.layers.Activation("tanh")(keras.layers.Rescaling(1 / 3)(x)))
    return x


def build_autoencoder(weights_dir: Path = DEFAULT_WEIGHTS, prefix: str = "taef2") -> tuple[Any, Any]:
    """The encoder (image -> latent at 1/8) and decoder (latent -> image) as Keras models with upstream weights."""
    import keras

    encoder_weights = dict(np.load(weights_dir / f"{prefix}_encoder.npz"))
    decoder_weights = dict(np.load(weights_dir / f"{prefix}_decoder.npz"))
    latent = decoder_weights["1.weight"].shape[1]
    image = keras.Input((None, None, 3))
    encoder = keras.Model(image, _stack(image, ENCODER_LAYOUT, encoder_weights, latent), name=f"{prefix}_encoder")
    code = keras.Input((None, None, latent))
    decoder = keras.Model(code, _stack(code, DECODER_LAYOUT, decoder_weights, 3), name=f"{prefix}_decoder")
    return encoder, decoder


class Reconstructor:
    """Round trips through the tiny autoencoder; crops each image to multiples of 8 first."""

    def __init__(self, weights_dir: Path = DEFAULT_WEIGHTS) -> None:
        self.encoder, self.decoder = build_autoencoder(weights_dir)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """An RGB uint8 image's reconstruction, uint8, cropped to multiples of 8 (top-left kept)."""
        height, width = (image.shape[0] // 8) * 8, (image.shape[1] // 8) * 8
        if height < 8 or width < 8:
            raise ValueError(f"image too small to reconstruct: {image.shape[:2]}")
        x = image[:height, :width, :3].astype(np.float32)[None] / 255.0
        out = self.decoder(self.encoder(x, training=False), training=False)
        return np.clip(np.asarray(out)[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
