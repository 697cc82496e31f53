"""Tests for okddip_tf.data: augmentation, tfds/folder/NumPy pipelines and their errors."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from okddip_tf import data

PAD = 4


def _windows(image):
    """All 81 offsets x 2 flips of a 32x32 crop of the zero-padded image, in NumPy."""
    height, width = image.shape[:2]
    padded = np.pad(image, [(PAD, PAD), (PAD, PAD), (0, 0)])
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            window = padded[dy:dy + height, dx:dx + width]
            yield (dy, dx, False), window
            yield (dy, dx, True), window[:, ::-1]


def _match(output, image):
    matches = [key for key, window in _windows(image) if np.array_equal(window, output)]
    assert matches, "output is not a (flipped) window of the zero-padded input"
    return matches


# --------------------------------------------------------------------------- augmentation


def test_augment_outputs_are_windows_of_padded_input():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, size=(32, 32, 3), dtype=np.uint8)  # no zeros inside
    seen = set()
    for seed in range(60):
        out = data.augment_image(tf.constant(image), tf.constant([seed, 7], tf.int64))
        assert out.shape == (32, 32, 3) and out.dtype == tf.uint8
        out = out.numpy()
        matches = _match(out, image)
        assert len(matches) == 1  # random pixels: the window is unambiguous
        dy, dx, flipped = matches[0]
        seen.add((dy, dx, flipped))
        # Zero padding shows exactly where the window leaves the original image.
        inside = np.zeros((40, 40), bool)
        inside[PAD:-PAD, PAD:-PAD] = True
        inside = inside[dy:dy + 32, dx:dx + 32][:, ::-1 if flipped else 1]
        assert np.all(out[inside] > 0) and np.all(out[~inside] == 0)
        assert int(np.sum(~inside.any(axis=1))) == abs(dy - PAD)  # zero rows at the border
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) >= 20
    assert any(dy in (0, 2 * PAD) or dx in (0, 2 * PAD) for dy, dx, _ in seen)


def test_augment_is_seeded_and_keeps_float_dtype():
    image = tf.random.uniform([32, 32, 3], 0.0, 255.0, seed=1)
    first = data.augment_image(image, 5)
    assert first.dtype == tf.float32
    np.testing.assert_array_equal(first, data.augment_image(image, 5))
    unseeded = {data.augment_image(image, None).numpy().tobytes() for _ in range(20)}
    assert len(unseeded) > 1


# --------------------------------------------------------------------------- NumPy arrays


def _arrays(n=10, num_classes=3):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n)
    return images, labels


def test_make_dataset_eval_round_trips_exactly():
    images, labels = _arrays(10)
    ds = data.make_dataset(images, labels, num_classes=3, batch_size=4, training=False)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]  # remainder kept
    got_images = np.concatenate([b[0] for b in batches])
    got_labels = np.concatenate([b[1] for b in batches])
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_make_dataset_training_shuffles_augments_and_drops_remainder():
    images, labels = _arrays(10)
    ds = data.make_dataset(images, labels, num_classes=3, batch_size=4, training=True, seed=3)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 32, 32, 3)] * 2
    for batch_images, batch_labels in batches:
        for out, label in zip(batch_images, batch_labels):
            sources = [i for i, image in enumerate(images)
                       if any(np.array_equal(w, out) for _, w in _windows(image))]
            assert sources and labels[sources[0]] == label
    assert not all(np.array_equal(b[0], images[i * 4:i * 4 + 4]) for i, b in enumerate(batches))
    same_seed = data.make_dataset(images, labels, num_classes=3, batch_size=4, training=True,
                                  seed=3)
    for (x1, y1), (x2, y2) in zip(batches, same_seed.as_numpy_iterator()):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros(4, np.uint8), np.zeros(4, int), r"\[N, \.\.\.\].*x\[None\]"),
    (np.array([["a", "b"]] * 4), np.zeros(4, int), r"numeric array"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 1), int), "1-D integer"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.float32), "1-D integer"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3, int), "length 4"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 3, -1]), r"\[0, 3\).*min -1 max 3"),
    (np.full((4, 32, 32, 3), 256.0, np.float32), np.zeros(4, int), r"\[0, 255\]"),
    (np.full((4, 32, 32, 3), -0.5, np.float32), np.zeros(4, int), r"\[0, 255\]"),
])
def test_make_dataset_rejects_bad_arrays(images, labels, match):
    with pytest.raises(ValueError, match=match):
        data.make_dataset(images, labels, num_classes=3, batch_size=2, training=False)


def test_make_dataset_rejects_training_set_smaller_than_batch():
    images, labels = _arrays(3)
    with pytest.raises(ValueError, match="0 steps"):
        data.make_dataset(images, labels, num_classes=3, batch_size=4, training=True)


def test_compute_pixel_stats_matches_numpy():
    images, _ = _arrays(12)
    mean, std = data.compute_pixel_stats(tf.data.Dataset.from_tensor_slices(images))
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(axis=0), rtol=1e-9)
    first, _ = data.compute_pixel_stats(images, max_examples=2)
    np.testing.assert_allclose(first, images[:2].reshape(-1, 3).mean(axis=0), rtol=1e-9)


# --------------------------------------------------------------------------- argument errors


def test_load_datasets_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch sizes"):
        data.load_datasets(batch_size=0, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown data source 'csv'.*'tfds', 'folder' or 'npz'"):
        data.load_datasets(source="csv", data_dir=str(tmp_path))


def test_unknown_tfds_name_suggests_close_matches(tmp_path):
    with pytest.raises(ValueError, match="cifar1000") as err:
        data.load_datasets(name="cifar1000", data_dir=str(tmp_path))
    assert "cifar10" in str(err.value).split("Close matches:")[1]
    assert "list_builders" in str(err.value)


def test_unprepared_tfds_dataset_explains_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_datasets(name="cifar10", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    for part in (str(tmp_path), "downloads are disabled", "TFDS_DATA_DIR", "tfds build"):
        assert part in message


# --------------------------------------------------------------------------- real CIFAR-100


@pytest.fixture(scope="module")
def cifar(tfds_data_dir):
    train, evals, info = data.load_datasets(name="cifar100", data_dir=tfds_data_dir,
                                            train_examples=512, eval_examples=250,
                                            batch_size=64, seed=0)
    return tfds_data_dir, train, evals, info


def test_cifar100_info(cifar):
    _, _, _, info = cifar
    assert info.name == "cifar100" and info.num_classes == 100
    assert info.image_shape == (32, 32, 3)
    assert len(info.class_names) == 100 and info.class_names[0] == "apple"
    assert (info.num_train_examples, info.num_eval_examples) == (512, 250)
    assert (info.pixel_mean, info.pixel_std) == data.KNOWN_PIXEL_STATS["cifar100"]
    np.testing.assert_allclose(info.pixel_mean, [129.3105, 124.0575, 112.4295])


def test_cifar100_batches(cifar):
    data_dir, train, evals, _ = cifar
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    raw = list(tfds.load("cifar100", split="train[:512]", data_dir=data_dir,
                         as_supervised=True, download=False).as_numpy_iterator())
    train_batches = list(train.as_numpy_iterator())
    assert len(train_batches) == 512 // 64
    for images, labels in train_batches:
        assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (64,) and labels.dtype == np.int32
    epoch_labels = np.concatenate([b[1] for b in train_batches])
    assert collections.Counter(epoch_labels) == collections.Counter(y for _, y in raw)
    assert not np.array_equal(epoch_labels, [y for _, y in raw])  # shuffled
    again = np.concatenate([b[1] for b in train.as_numpy_iterator()])
    assert not np.array_equal(epoch_labels, again)  # reshuffled each epoch
    assert not np.array_equal(train_batches[0][0], np.stack([x for x, _ in raw[:64]]))


def test_cifar100_eval_is_raw_and_keeps_remainder(cifar):
    data_dir, _, evals, _ = cifar
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    raw = list(tfds.load("cifar100", split="test[:250]", data_dir=data_dir,
                         as_supervised=True, download=False).as_numpy_iterator())
    batches = list(evals.as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [64, 64, 64, 58]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, np.stack([x for x, _ in raw]))
    np.testing.assert_array_equal(labels, [y for _, y in raw])


def test_cifar100_subset_errors(tfds_data_dir):
    with pytest.raises(ValueError, match="which has 50000"):
        data.load_datasets(data_dir=tfds_data_dir, train_examples=50_001)
    with pytest.raises(ValueError, match="0 steps"):
        data.load_datasets(data_dir=tfds_data_dir, train_examples=32, batch_size=64)
    with pytest.raises(ValueError, match="no split 'validation'"):
        data.load_datasets(data_dir=tfds_data_dir, eval_split="validation")


# --------------------------------------------------------------------------- folder source


def _write_folder(root, classes=("cat", "ant", "bee"), per_split=(("train", 4), ("test", 2)),
                  shape=(8, 6, 3), seed=0):
    """Writes random PNGs; returns {split: [(image, label index in sorted classes)]}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in per_split:
        written[split] = []
        for label, name in enumerate(sorted(classes)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 256, size=shape, dtype=np.uint8)
                png = tf.io.encode_png(image).numpy()
                (root / split / name / f"img{i}.png").write_bytes(png)
                written[split].append((image, label))
    return written


def _as_set(pairs):
    return sorted((image.tobytes(), int(label)) for image, label in pairs)


def test_folder_source_round_trips(tmp_path):
    written = _write_folder(tmp_path)
    train, evals, info = data.load_datasets(source="folder", name="tiny", directory=str(tmp_path),
                                            batch_size=4, eval_batch_size=5, seed=0)
    assert info.class_names == ("ant", "bee", "cat") and info.num_classes == 3
    assert info.image_shape == (8, 6, 3)
    assert (info.num_train_examples, info.num_eval_examples) == (12, 6)
    train_images = np.stack([x for x, _ in written["train"]]).reshape(-1, 3)
    np.testing.assert_allclose(info.pixel_mean, train_images.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(info.pixel_std, train_images.std(axis=0), rtol=1e-9)
    eval_batches = list(evals.as_numpy_iterator())
    assert [b[0].shape[0] for b in eval_batches] == [5, 1]
    pairs = [(x, y) for images, labels in eval_batches for x, y in zip(images, labels)]
    assert eval_batches[0][0].dtype == np.uint8 and eval_batches[0][1].dtype == np.int32
    assert _as_set(pairs) == _as_set(written["test"])
    train_batches = list(train.as_numpy_iterator())
    assert [b[0].shape for b in train_batches] == [(4, 8, 6, 3)] * 3


def test_folder_subset_and_jpeg(tmp_path):
    _write_folder(tmp_path, per_split=(("train", 4),))
    (tmp_path / "val" / "ant").mkdir(parents=True)
    (tmp_path / "val" / "bee").mkdir()
    (tmp_path / "val" / "cat").mkdir()
    jpeg = tf.io.encode_jpeg(np.full((8, 6, 3), 128, np.uint8)).numpy()
    (tmp_path / "val" / "bee" / "a.JPG").write_bytes(jpeg)
    _, evals, info = data.load_datasets(source="folder", directory=str(tmp_path),
                                        eval_split="val", train_examples=9, batch_size=3)
    assert (info.num_train_examples, info.num_eval_examples) == (9, 1)
    images, labels = next(evals.as_numpy_iterator())
    assert images.shape == (1, 8, 6, 3) and labels.tolist() == [1]


def test_folder_errors(tmp_path):
    folder = lambda **kw: data.load_datasets(source="folder", batch_size=2, **kw)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder(directory=str(tmp_path / "missing"))
    one = tmp_path / "one"
    _write_folder(one, classes=("a",))
    with pytest.raises(ValueError, match="at least 2"):
        folder(directory=str(one))
    empty = tmp_path / "empty"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (empty / split / name).mkdir(parents=True)
    with pytest.raises(ValueError, match="No .png"):
        folder(directory=str(empty))
    mismatch = tmp_path / "mismatch"
    _write_folder(mismatch, per_split=(("train", 2),))
    _write_folder(mismatch, classes=("ant", "bee"), per_split=(("test", 1),))
    with pytest.raises(ValueError, match="same"):
        folder(directory=str(mismatch))
    no_eval = tmp_path / "no_eval"
    _write_folder(no_eval, per_split=(("train", 2),))
    with pytest.raises(FileNotFoundError, match="test"):
        folder(directory=str(no_eval))
    sizes = tmp_path / "sizes"
    _write_folder(sizes)
    odd = tf.io.encode_png(np.zeros((9, 6, 3), np.uint8)).numpy()
    (sizes / "test" / "bee" / "odd.png").write_bytes(odd)
    with pytest.raises(ValueError, match=r"odd\.png is \(9, 6\)"):
        folder(directory=str(sizes))
    with pytest.raises(ValueError, match="between 1 and 12"):
        folder(directory=str(sizes), train_examples=13)
