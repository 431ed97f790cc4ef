"""A zoo of small simulated generators (AutoGAN, Zhang et al. 2019): autoencoders trained on real photos, each
with a different decoder, whose reconstructions carry that decoder's upsampling traces. Community Forensics (CVPR
2025) found the number of distinct generators matters more than the number of images, so the members differ
where generators differ: the upsampler (transposed convolution, nearest or bilinear upsampling + convolution,
pixel shuffle), normalisation, depth, latent size and loss. Code and seeds are here; trained members live under
``var/zoo/`` (never in the repo).

    python -m models.generators.zoo --train var/zoo --steps 1000 \
        --from-sets real-extra,cameras_polyu_realonly,faces-faceswap,faces-photoshop --per-set 40 [--members NAME,...]
    python -m models.generators.zoo --gallery docs/images/zoo-gallery.png --trained var/zoo   # draws wheel photos only

On those 160 train-split reals, 1,000 steps take 1-2 minutes a member on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

UPSAMPLERS = ("tconv", "nearest", "bilinear", "shuffle")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Member:
    """One simulated generator: ``stages`` 2x down- and upsamplings, ``latent`` channels at the bottleneck."""

    name: str
    upsampler: str
    norm: bool
    stages: int
    latent: int
    loss: str  # "l1" or "l2"
    seed: int
    width: int = 32


def zoo_members() -> list[Member]:
    """Sixteen members: every upsampler with and without batch norm, two depths, two latent sizes, two losses."""
    members = []
    for index, upsampler in enumerate(UPSAMPLERS):
        for variant, (norm, stages, latent, loss) in enumerate(((True, 3, 16, "l1"), (False, 2, 8, "l2"),
                                                                (False, 3, 8, "l1"), (True, 2, 16, "l2"))):
            name = f"{upsampler}-{'bn' if norm else 'plain'}-{stages}-z{latent}-{loss}"
            members.append(Member(name, upsampler, norm, stages, latent, loss, seed=1000 + 10 * index + variant))
    return members


def member_by_name(name: str) -> Member:
    for member in zoo_members():
        if member.name == name:
            return member
    raise ValueError(f"no zoo member {name!r}")


def _upsample(x: Any, member: Member, filters: int, index: int) -> Any:
    import keras
    import tensorflow as tf

    name = f"up{index}"
    if member.upsampler == "tconv":
        return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name)(x)
    if member.upsampler == "shuffle":
        x = keras.layers.Conv2D(filters * 4, 3, padding="same", name=f"{name}_conv")(x)
        return keras.layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2), name=name)(x)
    x = keras.layers.UpSampling2D(2, interpolation=member.upsampler, name=f"{name}_resize")(x)
    return keras.layers.Conv2D(filters, 3, padding="same", name=name)(x)


def build_member(member: Member) -> Any:
    """The autoencoder: RGB in [0, 1] -> RGB in [0, 1], any size divisible by 2**stages."""
    import keras

    keras.utils.set_random_seed(member.seed)
    image = keras.Input((None, None, 3))
    x = image
    for stage in range(member.stages):
        x = keras.layers.Conv2D(member.width * 2**stage, 3, strides=2, padding="same", activation="relu",
                                name=f"down{stage}")(x)
    x = keras.layers.Conv2D(member.latent, 1, name="latent")(x)
    for stage in reversed(range(member.stages)):
        x = _upsample(x, member, member.width * 2**stage, stage)
        if member.norm:
            x = keras.layers.BatchNormalization(name=f"norm{stage}")(x)
        x = keras.layers.ReLU(name=f"relu{stage}")(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="rgb")(x)
    return keras.Model(image, x, name=member.name.replace("-", "_"))


def random_patches(images: Sequence[np.ndarray], size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random size x size windows of uint8 RGB images, as floats in [0, 1]."""
    patches = []
    for index in rng.integers(len(images), size=count):
        image = images[int(index)]
        top = int(rng.integers(0, image.shape[0] - size + 1))
        left = int(rng.integers(0, image.shape[1] - size + 1))
        patches.append(image[top:top + size, left:left + size, :3])
    return np.stack(patches).astype(np.float32) / 255.0


def train_member(member: Member, images: Sequence[np.ndarray], steps: int, patch: int = 64, batch: int = 8,
                 learning_rate: float = 2e-3, model: Any = None) -> tuple[Any, list[float]]:
    """Train (or continue training) a member on random patches; returns the model and the loss of every step."""
    import keras
    import tensorflow as tf

    model = model or build_member(member)
    optimizer = keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng(member.seed)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            error = model(x, training=True) - x
            loss = tf.reduce_mean(tf.abs(error)) if member.loss == "l1" else tf.reduce_mean(tf.square(error))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))
        return loss

    losses = [float(step(tf.constant(random_patches(images, patch, batch, rng)))) for _ in range(steps)]
    precise_norm(model, images, patch, rng)
    return model, losses


def precise_norm(model: Any, images: Sequence[np.ndarray], patch: int, rng: np.random.Generator,
                 batches: int = 30, batch: int = 16) -> None:
    """Re-estimate batch-norm statistics with the trained weights ("precise BN", Wu & Johnson 2021). The moving
    averages lag weights that moved fast: after 300 steps a member with batch norm reconstructed photos at 10-13 dB
    PSNR in inference mode against 16-28 dB once re-estimated."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    for layer in norms:
        layer.momentum = 0.8
    for _ in range(batches):
        model(random_patches(images, patch, batch, rng), training=True)
    for layer in norms:
        layer.momentum = 0.99


def reconstruct(model: Any, image: np.ndarray, multiple: int = 8) -> np.ndarray:
    """A uint8 image's reconstruction, cropped to a multiple of ``multiple`` pixels."""
    height, width = image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple
    x = image[:height, :width, :3].astype(np.float32)[None] / 255.0
    return np.clip(np.asarray(model(x, training=False))[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_member(model: Any, member: Member, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{member.name}.weights.h5"
    model.save_weights(path)
    (folder / f"{member.name}.json").write_text(str(asdict(member)))
    return path


def load_member(name: str, folder: Path = Path("var/zoo")) -> Callable[[np.ndarray], np.ndarray]:
    """A trained member's reconstruction function (rebuilt from its code and seed, weights from ``folder``)."""
    member = member_by_name(name)
    model = build_member(member)
    model.load_weights(folder / f"{member.name}.weights.h5")
    return lambda image: reconstruct(model, image)


def wheel_photos() -> list[np.ndarray]:
    """The photos that ship in PyPI wheels (skimage, sklearn): what the gallery shows and tests train on."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    return photos + list(load_sample_images().images)


def gallery(members: Sequence[Member], steps: int, out: Path, trained: Path | None = None) -> Path:
    """What each member does to a wheel photo (skimage's chelsea, a 64 px detail of fur and whiskers): the
    reconstruction above, the amplified difference below. Members come from ``trained`` (weights trained elsewhere,
    e.g. on the shared photos) or are trained ``steps`` steps on the wheel photos; only wheel photos are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photos = wheel_photos()
    cat = photos[1]
    detail = cat[120:184, 140:204]
    columns = len(members) + 1
    figure, axes = plt.subplots(2, columns, figsize=(1.25 * columns, 3.0))
    axes[0, 0].imshow(detail)
    axes[0, 0].set_title("photo", fontsize=6)
    axes[1, 0].axis("off")
    for column, member in enumerate(members, 1):
        if trained is not None:
            model = build_member(member)
            model.load_weights(trained / f"{member.name}.weights.h5")
        else:
            model, _ = train_member(member, photos, steps)
        out_pixels = reconstruct(model, cat[56:248, 76:268])[64:128, 64:128]
        axes[0, column].imshow(out_pixels)
        axes[0, column].set_title(member.name.replace("-", "\n", 1), fontsize=5)
        difference = np.abs(out_pixels.astype(np.int16) - detail.astype(np.int16)).mean(-1)
        axes[1, column].imshow(np.clip(difference * 4, 0, 255), cmap="magma", vmin=0, vmax=255)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    source = f"trained on real photos ({trained})" if trained is not None else f"after {steps} steps on the wheel photos"
    figure.suptitle(f"Zoo members {source}: reconstruction (top), |difference| x4 (bottom)", fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=Path("var/zoo"), help="Where trained members go.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per member (batches of 8 64 px patches).")
    parser.add_argument("--members", default="", help="Comma-separated names (default: all).")
    parser.add_argument("--gallery", type=Path, default=None, help="Write the gallery image here instead.")
    parser.add_argument("--trained", type=Path, default=None,
                        help="With --gallery: draw members already trained in this folder instead of training them.")
    parser.add_argument("--photos", type=Path, default=None,
                        help="A folder of real photos (JPEG or PNG, symlinks fine) to train on (default: the wheel photos).")
    parser.add_argument("--from-sets", default="",
                        help="Train instead on train-split reals of these shared sets (comma-separated), --per-set each, "
                             "e.g. real-extra,cameras_polyu_realonly,faces-faceswap,faces-photoshop.")
    parser.add_argument("--per-set", type=int, default=40)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    args = parser.parse_args()
    from PIL import Image

    paths: list[Path] = []
    if args.gallery:
        chosen = [m for m in zoo_members() if not args.members or m.name in args.members.split(",")]
        print(gallery(chosen, args.steps, args.gallery, trained=args.trained))
        return
    if args.from_sets:
        from models.pairs import choose_sources

        paths = [path for _, path in choose_sources(args.data, args.from_sets.split(","), args.per_set, seed=7)]
    elif args.photos:
        paths = [path for path in sorted(args.photos.iterdir()) if path.suffix.lower() in PHOTO_SUFFIXES]
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in paths] if paths else wheel_photos()
    wanted = set(args.members.split(",")) if args.members else None
    for member in zoo_members():
        if wanted and member.name not in wanted:
            continue
        model, losses = train_member(member, photos, args.steps)
        save_member(model, member, args.train)
        print(f"{member.name}: loss {np.mean(losses[:10]):.4f} -> {np.mean(losses[-10:]):.4f}", flush=True)


if __name__ == "__main__":
    main()
