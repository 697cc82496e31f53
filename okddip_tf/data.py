"""Input pipelines: CIFAR-style image classification data from tfds or a folder.

Images stay ``uint8`` in ``[0, 255]`` (the models normalise them themselves) and
labels are ``int32`` of shape ``[batch]``. A tfds dataset missing from the data dir is
downloaded once where downloads are allowed and its host answers (okddip_tf/download.py).
"""

from __future__ import annotations

import difflib
import os

import numpy as np
import tensorflow as tf

from okddip_tf import download as download_module
# Defined without TensorFlow (JAX runs need them); imported here for the callers of this module.
from okddip_tf.dataset_info import KNOWN_PIXEL_STATS, DatasetInfo  # noqa: F401
from okddip_tf import progress
from okddip_tf.errors import ConfigError, InputError, MissingInputError

AUTOTUNE = tf.data.AUTOTUNE
PAD = 4
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def augment_image(image, seed_or_none=None):
    """Zero-pads 4 pixels, takes a random crop of the input size, flips at random.

    Args:
      image: ``[H, W, C]`` tensor of any dtype; the dtype is preserved.
      seed_or_none: a stateless seed (int or shape-``[2]`` integer tensor) for
        reproducible output, or None for fresh randomness.

    Returns:
      The augmented ``[H, W, C]`` image.
    """
    seed = seed_or_none
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    elif isinstance(seed, int):
        seed = tf.constant([seed, 0], tf.int64)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.convert_to_tensor(image)
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


def compute_pixel_stats(dataset_of_images, max_examples=5000):
    """Per-channel mean and (population) std in pixel units over the first images.

    Args:
      dataset_of_images: a ``tf.data.Dataset`` (or array) of ``[H, W, C]`` images,
        or of ``(image, label)`` pairs.
      max_examples: how many leading examples to use.

    Returns:
      ``(mean, std)``, each a tuple of floats, one per channel.
    """
    ds = dataset_of_images
    if not isinstance(ds, tf.data.Dataset):
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(ds))
    if isinstance(ds.element_spec, tuple):
        ds = ds.map(lambda image, *_: image)
    total, total_sq, count = 0.0, 0.0, 0
    for batch in ds.take(max_examples).batch(256).as_numpy_iterator():
        pixels = batch.reshape(-1, batch.shape[-1]).astype(np.float64)
        total = total + pixels.sum(axis=0)
        total_sq = total_sq + np.square(pixels).sum(axis=0)
        count += pixels.shape[0]
    if count == 0:
        raise ValueError("compute_pixel_stats got an empty dataset; pass at least one image.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def prepare_dataset(ds, *, batch_size, training, augment=None, shuffle_buffer=None,
                    seed=None, cache=False, epochs=None, initial_epoch=0):
    """Batches an ``(image, label)`` dataset for training or evaluation.

    Training: cache -> per epoch: shuffle -> augment -> batch with
    ``drop_remainder=True`` -> prefetch. Evaluation: cache -> batch -> prefetch.

    An epoch's order and augmentation are a pure function of its key (one half of
    its `stateless_split` seeds the shuffle, the other, folded with the example's
    position, its augmentation), not of TensorFlow's global seed or of how many
    epochs came before. Without `epochs`, each pass over the dataset is one epoch
    whose key is drawn afresh from `seed` (reshuffled each pass). With `epochs`, the
    dataset holds epochs ``initial_epoch .. epochs - 1`` back to back (pass it to
    ``fit`` with ``steps_per_epoch``) and epoch e's key is ``(seed, e)``: a run
    resumed at epoch e sees the batches of a run that never stopped.

    Args:
      ds: dataset of ``(image [H, W, C], integer label)`` pairs.
      batch_size: examples per batch (>= 1).
      training: build the training pipeline (shuffle, augment, drop remainder).
      augment: apply `augment_image`; defaults to ``training``.
      shuffle_buffer: shuffle buffer size; defaults to the dataset size if known,
        else 50 000.
      seed: seed for shuffling and augmentation (None: nondeterministic).
      cache: cache the decoded examples in memory before shuffling.
      epochs: None (one epoch per pass), or the epoch to stop before.
      initial_epoch: the first epoch the dataset holds (needs `epochs`).

    Returns:
      The batched ``tf.data.Dataset`` of ``(images, int32 labels)``.
    """
    _check_batch_size(batch_size)
    augment = training if augment is None else augment
    ds = ds.map(lambda image, label: (image, tf.cast(label, tf.int32)))
    if cache:
        ds = ds.cache()
    if not (training or augment):
        return ds.batch(batch_size, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    size = int(ds.cardinality())
    if training and shuffle_buffer is None:
        shuffle_buffer = size if size > 0 else 50_000
    keys = _epoch_keys(seed, epochs, initial_epoch)
    result = keys.flat_map(lambda key: _one_epoch(
        ds, key, batch_size=batch_size, training=training, augment=augment,
        shuffle_buffer=shuffle_buffer))
    if size >= 0:  # flat_map forgets the length; Keras and progress bars want it
        per_epoch = size // batch_size if training else -(-size // batch_size)
        num_epochs = 1 if epochs is None else epochs - initial_epoch
        result = result.apply(tf.data.experimental.assert_cardinality(per_epoch * num_epochs))
    return result.prefetch(AUTOTUNE)


def _epoch_keys(seed, epochs, initial_epoch):
    """A dataset of the ``int64 [2]`` key of every epoch a pipeline holds."""
    if epochs is None:
        if initial_epoch:
            raise ValueError("initial_epoch needs epochs: pass the epoch to stop before.")
        draw = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        return draw.map(lambda value: tf.stack([value, tf.constant(-1, tf.int64)]))
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"Need 0 <= initial_epoch < epochs, got initial_epoch={initial_epoch}"
                         f" and epochs={epochs}.")
    if seed is None:  # one draw: the epochs differ, but the dataset repeats itself
        seed = int(np.random.default_rng().integers(2**31))
    base = tf.constant(int(seed), tf.int64)
    return tf.data.Dataset.range(initial_epoch, epochs).map(lambda e: tf.stack([base, e]))


def _one_epoch(ds, key, *, batch_size, training, augment, shuffle_buffer):
    """One epoch of `ds`, shuffled, augmented and batched as a pure function of `key`."""
    shuffle_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if training:
        # The graph seed of this traced function only (the global seed is not touched): the
        # shuffle then depends on `key` alone, and a global seed of 0 cannot meet the tensor
        # op seed in `random_seed.get_seed`'s `seeds == (0, 0)` test.
        tf.random.set_seed(1)
        shuffle_seed = tf.random.stateless_uniform([], shuffle_key, minval=None, maxval=None,
                                                   dtype=tf.int64)
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    if augment:
        ds = ds.enumerate().map(
            lambda i, example: (
                augment_image(example[0], tf.random.experimental.stateless_fold_in(augment_key, i)),
                example[1]),
            num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)


def make_dataset(images, labels, *, num_classes, batch_size, training, augment=None,
                 shuffle_buffer=None, seed=None):
    """Builds a pipeline (see `prepare_dataset`) from in-memory NumPy arrays.

    Args:
      images: ``[N, H, W, 3]`` array; integer pixels must lie in ``[0, 255]``
        (stored as uint8), float pixels too (stored as float32).
      labels: ``[N]`` integer array with values in ``[0, num_classes)``.
      num_classes: number of classes.
      batch_size, training, augment, shuffle_buffer, seed: as in `prepare_dataset`.

    Returns:
      The batched ``tf.data.Dataset``.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [N, H, W, 3], got {images.shape}; "
                         "add a batch axis or convert grayscale/RGBA images to RGB.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) \
            or len(labels) != len(images):
        raise ValueError(f"labels must be a 1-D integer array of length {len(images)} "
                         f"(one per image), got shape {labels.shape} dtype {labels.dtype}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for num_classes="
                         f"{num_classes}, found min {labels.min()} max {labels.max()}; "
                         "fix num_classes or remap the labels.")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"pixel values must lie in [0, 255], found [{images.min()}, "
                         f"{images.max()}]; rescale images (e.g. multiply [0, 1] floats by 255).")
    images = images.astype(np.float32 if images.dtype.kind == "f" else np.uint8)
    if training and len(images) < batch_size:
        raise ValueError(f"{len(images)} training examples are fewer than batch_size="
                         f"{batch_size}; with drop_remainder there would be 0 steps.")
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    return prepare_dataset(ds, batch_size=batch_size, training=training, augment=augment,
                           shuffle_buffer=shuffle_buffer, seed=seed)


def load_datasets(*, source="tfds", name="cifar100", data_dir=None, directory=None,
                  path=None, train_split="train", eval_split="test", train_examples=None,
                  eval_examples=None, batch_size=128, eval_batch_size=None, augment=True,
                  shuffle_buffer=50_000, cache=True, seed=None, epochs=None, initial_epoch=0,
                  download=True, pipeline="cifar", image_size=224):
    """Loads the training and evaluation pipelines and their `DatasetInfo`.

    Args:
      source: ``"tfds"`` (a tfds dataset, downloaded once if needed), ``"folder"``
        (``<directory>/<split>/<class_name>/*.png|jpg|jpeg``) or ``"npz"`` (arrays in the
        ``.npz`` file `path`: see `okddip_tf.arrays`, which builds those pipelines).
      name: tfds dataset name (for ``"folder"``: only a label for `DatasetInfo`).
      data_dir: tfds data dir; defaults to ``$TFDS_DATA_DIR``, then tfds' default.
      directory: root folder of a ``"folder"`` dataset.
      train_split, eval_split: split names (tfds splits or subfolder names).
      train_examples, eval_examples: use only the first N examples of the split
        (for folders: first in a fixed, class-mixing order of the files).
      batch_size: training batch size; eval_batch_size defaults to it.
      augment: random crop + flip for training.
      shuffle_buffer, cache, seed: pipeline options, see `prepare_dataset`.
      epochs, initial_epoch: None, or the training dataset holds these epochs, each
        a pure function of (seed, epoch): see `prepare_dataset`.
      download: download and prepare a tfds dataset missing from the data dir (when its
        host answers; $OKDDIP_OFFLINE=1 overrides): see okddip_tf/download.py.
      pipeline: ``"cifar"`` (this module) or ``"imagenet"`` (`okddip_tf.imagenet`: images of
        any size, random-resized crops to `image_size`; evaluation resize and centre crop).
      image_size: the crop size of the ``"imagenet"`` pipeline.

    Returns:
      ``(train_ds, eval_ds, info)``.

    Raises:
      ValueError: bad arguments, unknown tfds name, inconsistent folder data.
      FileNotFoundError: dataset not prepared in the data dir and not downloaded (downloads
        off or its host unreachable), or folder missing.
    """
    if source == "npz":
        from okddip_tf import arrays  # pylint: disable=import-outside-toplevel

        return arrays.load_datasets(
            name=name, path=path, train_split=train_split, eval_split=eval_split,
            train_examples=train_examples, eval_examples=eval_examples, batch_size=batch_size,
            eval_batch_size=eval_batch_size, augment=augment, seed=seed, epochs=epochs,
            initial_epoch=initial_epoch)
    if pipeline == "imagenet":
        from okddip_tf import imagenet  # pylint: disable=import-outside-toplevel

        return imagenet.load_datasets(
            source=source, name=name, data_dir=data_dir, directory=directory,
            train_split=train_split, eval_split=eval_split, train_examples=train_examples,
            eval_examples=eval_examples, batch_size=batch_size, eval_batch_size=eval_batch_size,
            augment=augment, shuffle_buffer=shuffle_buffer, cache=cache, seed=seed,
            epochs=epochs, initial_epoch=initial_epoch, image_size=image_size)
    if pipeline != "cifar":
        raise ConfigError(f"Unknown data pipeline {pipeline!r}; use 'cifar' or 'imagenet'.")
    _check_batch_size(batch_size)
    _check_batch_size(eval_batch_size or batch_size)
    if source == "tfds":
        train, evals, meta = _load_tfds(name, data_dir, train_split, eval_split,
                                        train_examples, eval_examples, download)
    elif source == "folder":
        train, evals, meta = _load_folder(directory, train_split, eval_split,
                                          train_examples, eval_examples)
    else:
        raise ConfigError(f"Unknown data source {source!r}; use 'tfds', 'folder' or 'npz'.")
    num_train, num_eval = int(train.cardinality()), int(evals.cardinality())
    if num_train < batch_size:
        raise ConfigError(f"The training set has {num_train} examples, fewer than "
                          f"batch_size={batch_size}: drop_remainder would give 0 steps. "
                          "Use more train_examples or a smaller batch_size.")
    if source == "tfds" and name in KNOWN_PIXEL_STATS:
        mean, std = KNOWN_PIXEL_STATS[name]
    else:
        with progress.step(f"Computing the pixel mean and std of {num_train} training images"):
            mean, std = compute_pixel_stats(train)
    progress.say(f"Data: {name} ({source}), {num_train} training and {num_eval} evaluation "
                 f"examples{'; cached in memory as the first epoch reads them' if cache else ''}.")
    info = DatasetInfo(name=name, num_train_examples=num_train, num_eval_examples=num_eval,
                       pixel_mean=tuple(mean), pixel_std=tuple(std), **meta)
    train_ds = prepare_dataset(train, batch_size=batch_size, training=True, augment=augment,
                               shuffle_buffer=shuffle_buffer, seed=seed, cache=cache,
                               epochs=epochs, initial_epoch=initial_epoch)
    eval_ds = prepare_dataset(evals, batch_size=eval_batch_size or batch_size,
                              training=False, cache=cache)
    return train_ds, eval_ds, info


def _check_batch_size(batch_size):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch sizes must be integers >= 1, got {batch_size!r}.")


def _subset_size(requested, available, split):
    if requested is None:
        return available
    if not 1 <= requested <= available:
        raise ConfigError(f"Asked for {requested} examples of split {split!r}, which has "
                          f"{available}; use a value between 1 and {available} (or None).")
    return requested


def _load_tfds(name, data_dir, train_split, eval_split, train_examples, eval_examples,
               download=True):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    from okddip_tf import compat  # pylint: disable=import-outside-toplevel

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    not_found = compat.dataset_not_found_error()  # before the try: a moved class fails every run
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except not_found:
        close = difflib.get_close_matches(name.split(":")[0], tfds.list_builders(), n=5)
        raise ConfigError(f"tfds does not know a dataset named {name!r}. Close matches: "
                          f"{', '.join(close) or 'none'}. List all names with "
                          "`python -c 'import tensorflow_datasets as tfds; "
                          "print(tfds.list_builders())'`.") from None
    searched = data_dir or "the tfds default (~/tensorflow_datasets)"
    download_module.ensure_prepared(builder, name, searched, download)
    splits = []
    for split, requested in ((train_split, train_examples), (eval_split, eval_examples)):
        if split.split("[")[0] not in builder.info.splits:
            raise ConfigError(f"{name!r} has no split {split!r}; available: "
                              f"{sorted(builder.info.splits)}.")
        size = _subset_size(requested, builder.info.splits[split].num_examples, split)
        if requested is not None and "[" not in split:
            split = f"{split}[:{size}]"
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        splits.append(ds.take(size))
    if not {"image", "label"} <= set(builder.info.features):
        raise InputError(f"{name!r} has features {list(builder.info.features)}; only "
                         "datasets with 'image' and 'label' features are supported.")
    label = builder.info.features["label"]
    meta = dict(num_classes=label.num_classes,
                image_shape=tuple(builder.info.features["image"].shape),
                class_names=tuple(label.names) if label.names else None)
    return splits[0], splits[1], meta


def _folder_split(directory, split, requested, class_names=None):
    """Lists ``<directory>/<split>/<class>/*`` as (class names, paths, labels)."""
    root = os.path.join(directory, split)
    if not tf.io.gfile.isdir(root):
        raise MissingInputError(f"Split folder {root} does not exist; expected "
                                f"<directory>/{split}/<class_name>/*.png|jpg|jpeg.")
    classes = sorted(c.rstrip("/") for c in tf.io.gfile.listdir(root)
                     if tf.io.gfile.isdir(os.path.join(root, c)))
    if class_names is None and len(classes) < 2:
        raise InputError(f"{root} has {len(classes)} class folder(s); a classifier "
                         "needs at least 2 (<split>/<class_name>/ subfolders).")
    if class_names is not None and classes != class_names:
        raise InputError(f"Class folders of {root} {classes} differ from those of the "
                         f"training split {class_names}; both splits need the same.")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in tf.io.gfile.listdir(os.path.join(root, name))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(root, name, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise InputError(f"No .png/.jpg/.jpeg images under {root}/<class_name>/.")
    order = np.random.default_rng(0).permutation(len(paths))  # fixed class mixing
    order = order[:_subset_size(requested, len(paths), split)]
    return classes, [paths[i] for i in order], [labels[i] for i in order]


def _image_size(path):
    """Returns (height, width) from the file header, without decoding pixels."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    try:
        return tuple(int(v) for v in tf.io.extract_jpeg_shape(data)[:2].numpy())
    except tf.errors.InvalidArgumentError:
        raise InputError(f"{path} is neither a PNG nor a JPEG image.") from None


def _load_folder(directory, train_split, eval_split, train_examples, eval_examples):
    if not directory or not tf.io.gfile.isdir(directory):
        raise MissingInputError(f"Dataset folder {directory!r} does not exist; pass "
                                "directory=<root> holding <split>/<class_name>/*.png.")
    class_names, *train = _folder_split(directory, train_split, train_examples)
    _, *evals = _folder_split(directory, eval_split, eval_examples, class_names)
    height, width = _image_size(train[0][0])
    for path in train[0] + evals[0]:
        if _image_size(path) != (height, width):
            raise InputError(f"{path} is {_image_size(path)} (HxW) but the images must "
                             f"all be {(height, width)} like {train[0][0]}; resize it.")
    shape = (height, width, 3)

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                   expand_animations=False, dtype=tf.uint8)
        return tf.ensure_shape(image, shape), label

    datasets = [tf.data.Dataset.from_tensor_slices((paths, np.int32(labels)))
                .map(decode, num_parallel_calls=AUTOTUNE) for paths, labels in (train, evals)]
    meta = dict(num_classes=len(class_names), image_shape=shape,
                class_names=tuple(class_names))
    return datasets[0], datasets[1], meta
