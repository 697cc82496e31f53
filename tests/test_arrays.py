"""The npz source (okddip_tf.data: npz, epochs, jax_batches): reading, augmentation, epoch order.

The augmentation is checked against the tf.data path: images whose pixels spell out their own
row, column and index go through `okddip_tf.data.pipeline.prepare_dataset`; each output reveals
the window and flip TensorFlow drew, and the npz source's crop-and-flip (NumPy on the host, jitted
JAX on the device) given those draws must give the very same images. TensorFlow's stateless draws
cannot be reproduced outside TensorFlow, so the npz source draws its own from (seed, epoch); those
are checked to have the tf.data path's distribution, and the device pipeline is checked to apply
them.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf

from okddip_tf.data import epochs, jax_batches, npz, pipeline

SIDE = 16
BASE = 100  # pixel values BASE + row / BASE + column, so zero padding is told apart


def telltale_images(count):
    """Image i: channel 0 = BASE + row, channel 1 = BASE + column, channel 2 = i."""
    rows, cols = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    images = np.zeros((count, SIDE, SIDE, 3), np.uint8)
    images[..., 0], images[..., 1] = BASE + rows, BASE + cols
    images[..., 2] = np.arange(count)[:, None, None]
    return images


def recover_draws(batch):
    """(source index, offset_y, offset_x, flip) of augmented telltale images [B, H, W, 3].

    Output pixel (8, 8) always lies inside the image: its row is offset_y + 8 - PAD, its column
    offset_x + 8 - PAD (unflipped) or offset_x + 7 - PAD (flipped: columns run backwards).
    """
    centre = batch[:, 8, 8].astype(int)
    flip = batch[:, 8, 9, 1].astype(int) < centre[:, 1]
    offset_y = centre[:, 0] - BASE - 8 + epochs.PAD
    offset_x = centre[:, 1] - BASE - np.where(flip, 7, 8) + epochs.PAD
    return centre[:, 2], offset_y, offset_x, flip


def tf_data_batches(images, seed, epochs=1):
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), np.int32)))
    batches = pipeline.prepare_dataset(ds, batch_size=len(images), training=True, seed=seed,
                                       epochs=epochs)
    return np.concatenate([batch.numpy() for batch, _ in batches])


def test_npz_crop_and_flip_reproduce_the_tf_data_windows_and_flips():
    assert epochs.PAD == pipeline.PAD
    images = telltale_images(200)
    augmented = tf_data_batches(images, seed=3, epochs=4)  # 800 tf.data draws
    source, offset_y, offset_x, flip = recover_draws(augmented)
    # Sanity of the recovery: the windows tf.data drew span the whole range, flips both ways.
    assert set(offset_y) == set(offset_x) == set(range(2 * epochs.PAD + 1))
    assert 0.4 < flip.mean() < 0.6
    host = epochs.crop_flip(np, images[source], offset_y, offset_x, flip)
    np.testing.assert_array_equal(host, augmented)
    labels = np.zeros(len(images), np.int32)
    device, _ = jax_batches.device_batch(images, labels, source.astype(np.int32),
                                         offset_y.astype(np.int32), offset_x.astype(np.int32),
                                         flip)
    np.testing.assert_array_equal(np.asarray(device), augmented)


def chi_square_uniform(values, bins):
    counts = np.bincount(values, minlength=bins)
    expected = len(values) / bins
    return float(np.sum((counts - expected) ** 2 / expected))


def test_npz_draws_have_the_tf_data_distribution():
    size, bins = 4000, 2 * epochs.PAD + 1
    order, offset_y, offset_x, flip = epochs.epoch_draws(seed=0, epoch=0, size=size)
    assert sorted(order) == list(range(size))  # each example once per epoch
    tf_draws = recover_draws(tf_data_batches(telltale_images(200), seed=5, epochs=20))
    for ours, theirs in ((offset_y, tf_draws[1]), (offset_x, tf_draws[2])):
        assert set(ours) == set(theirs) == set(range(bins))
        # Both uniform over the 9 offsets (chi-square, 8 dof: 26.1 is p = 0.001).
        assert chi_square_uniform(ours, bins) < 26.1
        assert chi_square_uniform(theirs, bins) < 26.1
    assert abs(flip.mean() - 0.5) < 0.03 and abs(tf_draws[3].mean() - 0.5) < 0.04


def test_device_batches_apply_the_epoch_draws_and_resume_exactly():
    images = telltale_images(96)
    labels = np.arange(96, dtype=np.int32) % 7
    options = dict(batch_size=32, augment=True, seed=11, epochs=3)
    stream = list(jax_batches.DeviceBatches(images, labels, initial_epoch=0, **options))
    assert len(stream) == 9 == len(jax_batches.DeviceBatches(images, labels, initial_epoch=0,
                                                             **options))
    for epoch in range(3):
        batches = stream[3 * epoch:3 * epoch + 3]
        got = recover_draws(np.concatenate([np.asarray(b[0]) for b in batches]))
        for mine, expected in zip(got, epochs.epoch_draws(11, epoch, 96)):
            np.testing.assert_array_equal(mine, expected)
        np.testing.assert_array_equal(np.concatenate([np.asarray(b[1]) for b in batches]),
                                      labels[got[0]])
    resumed = list(jax_batches.DeviceBatches(images, labels, initial_epoch=2, **options))
    for (x, y), (x_resumed, y_resumed) in zip(stream[6:], resumed, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(x_resumed))
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_resumed))


def test_tf_npz_pipeline_yields_the_device_batches(tmp_path):
    images = telltale_images(64)
    labels = np.arange(64) % 5
    path = tmp_path / "t.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:10], y_test=labels[:10])
    train_ds, eval_ds, info = npz.load_datasets(path=str(path), name="t", batch_size=16,
                                                eval_batch_size=4, seed=2, epochs=2)
    assert isinstance(train_ds, tf.data.Dataset) and len(train_ds) == 8
    device = jax_batches.DeviceBatches(images, labels.astype(np.int32), batch_size=16,
                                       augment=True, seed=2, epochs=2, initial_epoch=0)
    for (x, y), (x_device, y_device) in zip(train_ds, device, strict=True):
        np.testing.assert_array_equal(x.numpy(), np.asarray(x_device))
        np.testing.assert_array_equal(y.numpy(), np.asarray(y_device))
    assert [len(x) for x, _ in eval_ds] == [4, 4, 2]
    assert info.num_classes == 5 and info.image_shape == (SIDE, SIDE, 3)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(info.pixel_mean, pixels.mean(0))
    np.testing.assert_allclose(info.pixel_std, pixels.std(0))


def test_npz_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs data.path"):
        npz.read_split(None, "train")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        npz.read_split(str(tmp_path / "missing.npz"), "train")
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.arange(4))
    with pytest.raises(ValueError, match=r"no split 'test' \(keys: \['x_train', 'y_train'\]\)"):
        npz.read_split(str(path), "test")
    with pytest.raises(ValueError, match="no tfds slicing"):
        npz.read_split(str(path), "train[:50%]")
    with pytest.raises(ValueError, match="between 1 and 4"):
        npz.read_split(str(path), "train", 5)
    np.savez(path, x_train=np.full((4, 8, 8, 3), 300, np.int32), y_train=np.arange(4))
    with pytest.raises(ValueError, match=r"uint8 pixels in \[0, 255\]"):
        npz.read_split(str(path), "train")


@pytest.mark.parametrize("kind", ["tokens", "features", "frames"])
def test_npz_source_serves_token_ids_and_features_as_they_are(kind, tmp_path):
    """x_<split> of token ids [N, T] or features [N, F] / frames [N, T, F] go to the model
    unaugmented: each training batch is rows of x_train (as int32 or float32) with their labels,
    every example once an epoch, and the info says what they are (no image shape or pixel
    statistics)."""
    rng = np.random.default_rng(3)
    shape, dtype = {"tokens": ((96, 10), np.int64), "features": ((96, 7), np.float64),
                    "frames": ((96, 5, 4), np.float64)}[kind]
    x = (rng.integers(0, 50, shape) if kind == "tokens" else rng.standard_normal(shape))
    x = x.astype(dtype)
    y = np.arange(96) % 3
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    train_ds, eval_ds, info = npz.load_datasets(path=str(path), name="mine", batch_size=16,
                                                augment=True, seed=4, epochs=1)
    want = "int32" if kind == "tokens" else "float32"
    assert (info.image_shape, info.input_shape, info.input_dtype) == (None, shape[1:], want)
    assert info.example_shape == shape[1:] and info.pixel_mean == info.pixel_std == ()
    rows = {x[i].astype(want).tobytes(): y[i] for i in range(96)}
    seen = []
    for batch, labels in train_ds:
        assert batch.dtype.name == want and batch.shape[1:] == shape[1:]
        for row, label in zip(batch.numpy(), labels.numpy()):
            assert rows[row.tobytes()] == label  # a row of x_train, unchanged, with its label
            seen.append(row.tobytes())
    assert sorted(seen) == sorted(rows)  # each example once in the epoch
    evals = np.concatenate([b.numpy() for b, _ in eval_ds])
    np.testing.assert_array_equal(evals, x[:20].astype(want))


def test_npz_errors_for_inputs_that_are_not_images(tmp_path):
    path, labels = tmp_path / "bad.npz", np.arange(6) % 2

    def read(x, test=None):
        np.savez(path, x_train=x, y_train=labels, x_test=x if test is None else test,
                 y_test=labels)
        return npz.load_arrays(name="bad", path=str(path), train_split="train",
                               eval_split="test", train_examples=None, eval_examples=None)

    with pytest.raises(ValueError, match=r"x_train has shape \(6,\) and dtype float64; expected"):
        read(np.zeros(6))
    with pytest.raises(ValueError, match="NaN or infinite values"):
        read(np.array([[0.0, np.nan]] * 6))
    with pytest.raises(ValueError, match=r"read as token ids, which must lie in \[0, 2\*\*31\)"):
        read(np.full((6, 4), -1))
    with pytest.raises(ValueError, match=r"integer \(6, 8, 8\): integer inputs are token ids "
                                         r"\[N, T\]. Store images as uint8 \[N, H, W, 3\]"):
        read(np.zeros((6, 8, 8), np.uint8))  # grayscale images without a channel axis
    with pytest.raises(ValueError, match=r"dtype bool; expected"):
        read(np.zeros((6, 4), bool))
    with pytest.raises(ValueError, match=r"x_train is int32 \[N, 4\] but x_test is float32 "
                                         r"\[N, 4\]; they must match"):
        read(np.zeros((6, 4), np.int32), np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="x_train holds 5 examples but y_train 6 labels"):
        read(np.zeros((5, 4), np.float32))


def jpeg_npz(source, tmp_path, count):
    """The first `count` train and test JPEGs of the compact CIFAR-100 file `source`."""
    with np.load(source) as full:
        parts = {}
        for split in ("train", "test"):
            offsets = full[f"{split}_offsets"][:count + 1]
            parts.update({f"{split}_jpeg": full[f"{split}_jpeg"][:offsets[-1]],
                          f"{split}_offsets": offsets, f"y_{split}": full[f"y_{split}"][:count]})
    path = tmp_path / "slice.npz"
    np.savez(path, **parts)
    return path, parts


@pytest.fixture
def shared_npz(cifar100_npz):
    return cifar100_npz


def test_compact_jpeg_layout_decodes_like_tensorflow(shared_npz, tmp_path):
    path, parts = jpeg_npz(shared_npz, tmp_path, 64)
    images, labels = npz.read_split(str(path), "train")
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 100
    blob, offsets = parts["train_jpeg"], parts["train_offsets"]
    for i in range(64):  # an independent decoder, with the exact IDCT
        expected = tf.io.decode_jpeg(blob[offsets[i]:offsets[i + 1]].tobytes(), channels=3,
                                     dct_method="INTEGER_ACCURATE").numpy()
        np.testing.assert_array_equal(images[i], expected)
    assert not images.flags.writeable  # shared by the cache: read-only


@pytest.mark.slow
def test_whole_compact_cifar100_loads_through_the_npz_source(shared_npz):
    train, evals, info = npz.load_arrays(name="cifar100", path=shared_npz, train_split="train",
                                         eval_split="test", train_examples=None,
                                         eval_examples=None)
    assert train[0].shape == (50_000, 32, 32, 3) and evals[0].shape == (10_000, 32, 32, 3)
    assert train[0].dtype == np.uint8 and info.num_classes == 100
    for labels, per_class in ((train[1], 500), (evals[1], 100)):
        assert np.array_equal(np.bincount(labels, minlength=100), np.full(100, per_class))
    # The README's channel means agree with the official constants to 4e-4.
    np.testing.assert_allclose(train[0].reshape(-1, 3).mean(0) / 255,
                               (0.5071, 0.4865, 0.4409), atol=1e-3)


def test_jpeg_blob_layout_decodes_like_tensorflow(tmp_path):
    """The compact layout, written here: JPEG files concatenated, with N + 1 offsets."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    files = []
    for picture in pictures:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=75)
        files.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(f) for f in files])
    path = tmp_path / "jpeg.npz"
    np.savez(path, train_jpeg=np.concatenate(files), train_offsets=offsets,
             y_train=np.array([2, 0, 1]))
    images, labels = npz.read_split(str(path), "train")
    assert images.shape == (3, 8, 12, 3) and list(labels) == [2, 0, 1]
    for image, encoded in zip(images, files):
        expected = tf.io.decode_jpeg(encoded.tobytes(), channels=3,
                                     dct_method="INTEGER_ACCURATE").numpy()
        np.testing.assert_array_equal(image, expected)
