"""The ImageNet-style pipeline (okddip_tf.data.imagenet) on a folder of real JPEG files it writes.

Each class's images are one solid colour, in several sizes and aspect ratios, so a crop of any
window identifies its class; one image holds a pattern for the exact centre-crop check.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from okddip_tf import data
from okddip_tf.data import imagenet

COLOURS = {"apple": (200, 30, 30), "sky": (30, 60, 220), "tree": (20, 180, 40)}
SIZES = [(40, 60), (64, 48), (50, 50), (45, 90)]


def write_jpeg(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_jpeg(np.uint8(pixels), quality=100))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for split, repeats in (("train", 2), ("val", 1)):
        for name, colour in COLOURS.items():
            for i, (h, w) in enumerate(SIZES * repeats):
                pixels = np.broadcast_to(np.uint8(colour), (h, w, 3))
                write_jpeg(str(root / split / name / f"{i}.jpeg"), pixels)
    return str(root)


def load(folder, **kwargs):
    options = dict(source="folder", name="tiny_imagenet", directory=folder,
                   train_split="train", eval_split="val", batch_size=4, eval_batch_size=5,
                   seed=0, pipeline="imagenet", image_size=24)
    options.update(kwargs)
    return data.load_datasets(**options)


def nearest_class(images):
    colours = np.float32(list(COLOURS.values()))
    means = images.reshape(len(images), -1, 3).mean(1)
    return np.argmin(((means[:, None] - colours[None]) ** 2).sum(-1), axis=1)


def test_folder_pipeline_shapes_labels_and_info(folder):
    train_ds, eval_ds, info = load(folder)
    assert info.num_classes == 3 and info.class_names == ("apple", "sky", "tree")
    assert info.image_shape == (24, 24, 3)
    assert (info.num_train_examples, info.num_eval_examples) == (24, 12)
    assert info.pixel_mean == imagenet.IMAGENET_MEAN
    batches = list(train_ds)
    assert len(batches) == 24 // 4
    for images, labels in batches + list(eval_ds):
        assert images.dtype == tf.uint8 and images.shape[1:] == (24, 24, 3)
        assert labels.dtype == tf.int32
        # A crop of a solid image is that colour: each label sits with its own class's pixels.
        np.testing.assert_array_equal(nearest_class(images.numpy()), labels.numpy())
    assert sorted(np.concatenate([l.numpy() for _, l in eval_ds])) == [0] * 4 + [1] * 4 + [2] * 4


def test_training_crops_are_seeded_and_differ_per_epoch(folder):
    first = [b[0].numpy() for b in load(folder, epochs=2)[0]]
    again = [b[0].numpy() for b in load(folder, epochs=2)[0]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    resumed = [b[0].numpy() for b in load(folder, epochs=2, initial_epoch=1)[0]]
    assert all(np.array_equal(a, b) for a, b in zip(first[6:], resumed))
    assert not all(np.array_equal(a, b) for a, b in zip(first[:6], first[6:]))


def test_random_resized_crop_windows_respect_area_and_aspect():
    shape = tf.constant([300, 400, 3])
    windows = np.array([imagenet.crop_window(shape, tf.constant([s, 1])).numpy()
                        for s in range(300)])
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 300).all() and (x + w <= 400).all()
    area, aspect = h * w / (300 * 400), w / h
    fallback = (h == 300) & (w == 400)  # no window found in 10 attempts: the whole image
    assert fallback.mean() < 0.2
    kept = ~fallback
    assert area[kept].min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert aspect[kept].min() >= 0.75 - 0.02 and aspect[kept].max() <= 4 / 3 + 0.02
    assert area[kept].min() < 0.2 and area[kept].max() > 0.7  # the range is used


def test_eval_transform_is_resize_then_centre_crop(tmp_path):
    """Shorter side already at resize_size: resizing is the identity, the crop a NumPy slice."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 40, 3)).astype(np.uint8)
    path = str(tmp_path / "pattern.png")  # PNG: lossless, and the non-JPEG decode path
    tf.io.write_file(path, tf.io.encode_png(pixels))
    crop = imagenet.eval_image(tf.io.read_file(path), image_size=24, resize_size=28).numpy()
    np.testing.assert_array_equal(crop, pixels[2:26, 8:32])
    # A 60x80 solid image: resized so its shorter side is 256 * 24 / 224, then cropped.
    solid = tf.io.encode_jpeg(np.full((60, 80, 3), 100, np.uint8), quality=100)
    out = imagenet.eval_image(solid, image_size=24).numpy()
    assert out.shape == (24, 24, 3) and np.abs(out.astype(int) - 100).max() <= 2
    assert imagenet.default_resize_size(224) == 256


def test_tfds_source_with_encoded_images(tfds_data_dir):
    """The tfds path reads encoded images (here CIFAR-100's PNGs) without decoding them first."""
    train_ds, eval_ds, info = data.load_datasets(
        source="tfds", name="cifar100", data_dir=tfds_data_dir, train_examples=64,
        eval_examples=32, batch_size=16, seed=0, pipeline="imagenet", image_size=24)
    assert info.num_classes == 100 and info.image_shape == (24, 24, 3)
    images, labels = next(iter(train_ds))
    assert images.shape == (16, 24, 24, 3) and labels.dtype == tf.int32
    reference = data.load_datasets(name="cifar100", data_dir=tfds_data_dir, train_examples=64,
                                   eval_examples=32, batch_size=16)[1]
    np.testing.assert_array_equal(np.concatenate([l for _, l in eval_ds]),
                                  np.concatenate([l for _, l in reference]))


def test_missing_imagenet_is_a_clear_error(tmp_path, folder, tfds_data_dir):
    with pytest.raises(FileNotFoundError, match="manual download") as missing:
        data.load_datasets(name="imagenet2012", data_dir=str(tmp_path), pipeline="imagenet")
    # tfds' own instructions, and the command that prepares the dataset from those files.
    assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in str(missing.value)
    assert ("`tfds build imagenet2012 --manual_dir=<that folder> --data_dir=<dir>`"
            in str(missing.value))
    with pytest.raises(ValueError, match="has no split 'valid'; available"):
        data.load_datasets(name="cifar100", data_dir=tfds_data_dir, pipeline="imagenet",
                           eval_split="valid")
    with pytest.raises(ValueError, match="Unknown data pipeline"):
        data.load_datasets(pipeline="coco")
    with pytest.raises(ValueError, match="image_size must be an integer >= 8"):
        load(folder, image_size=4)
