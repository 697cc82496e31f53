"""The CIFAR-style tf.data pipeline, and the helpers the tf.data sources of okddip_tf.data share.

Images stay ``uint8`` in ``[0, 255]`` (the models normalise them themselves) and labels are
``int32`` of shape ``[batch]``. An epoch's shuffle and augmentation are a pure function of
(seed, epoch) (`prepare_dataset`), so a resumed run sees the batches of a run never stopped.
`okddip_tf.data.sources` feeds it tfds and folder datasets; `okddip_tf.data.imagenet` shares
its epoch keys, checks and folder listing (`epoch_keys`, `check_batch_size`, `subset_size`,
`folder_split`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from okddip_tf.data.epochs import PAD  # the npz source crops with the same padding
from okddip_tf.errors import ConfigError, InputError, MissingInputError

AUTOTUNE = tf.data.AUTOTUNE
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
    check_batch_size(batch_size)
    augment = training if augment is None else augment
    ds = ds.map(lambda image, label: (image, tf.cast(label, tf.int32)))
    if cache:
        ds = ds.cache()
    if not (training or augment):
        return ds.batch(batch_size, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    size = int(ds.cardinality())
    if training and shuffle_buffer is None:
        shuffle_buffer = size if size > 0 else 50_000
    keys = epoch_keys(seed, epochs, initial_epoch)
    result = keys.flat_map(lambda key: _one_epoch(
        ds, key, batch_size=batch_size, training=training, augment=augment,
        shuffle_buffer=shuffle_buffer))
    if size >= 0:  # flat_map forgets the length; Keras and progress bars want it
        per_epoch = size // batch_size if training else -(-size // batch_size)
        num_epochs = 1 if epochs is None else epochs - initial_epoch
        result = result.apply(tf.data.experimental.assert_cardinality(per_epoch * num_epochs))
    return result.prefetch(AUTOTUNE)


def epoch_keys(seed, epochs, initial_epoch):
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


def shuffle_epoch(ds, shuffle_key, shuffle_buffer):
    """`ds` shuffled as a pure function of `shuffle_key` (a stateless seed); call it while tracing.

    Sets the graph seed of the traced function it runs in (the global seed is not touched): the
    shuffle then depends on `shuffle_key` alone, and a global seed of 0 cannot meet the tensor op
    seed in `random_seed.get_seed`'s `seeds == (0, 0)` test.
    """
    tf.random.set_seed(1)
    shuffle_seed = tf.random.stateless_uniform([], shuffle_key, minval=None, maxval=None,
                                               dtype=tf.int64)
    return ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)


def _one_epoch(ds, key, *, batch_size, training, augment, shuffle_buffer):
    """One epoch of `ds`, shuffled, augmented and batched as a pure function of `key`."""
    shuffle_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if training:
        ds = shuffle_epoch(ds, shuffle_key, shuffle_buffer)
    if augment:
        ds = ds.enumerate().map(
            lambda i, example: (
                augment_image(example[0], tf.random.experimental.stateless_fold_in(augment_key, i)),
                example[1]),
            num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)


def make_dataset(inputs, labels, *, num_classes, batch_size, training, augment=None,
                 shuffle_buffer=None, seed=None):
    """Builds a pipeline (see `prepare_dataset`) from in-memory NumPy arrays of any input kind.

    Images ``[N, H, W, C]`` (integer or float pixels in ``[0, 255]``, stored as uint8 or
    float32) get the CIFAR augmentation when training, unless ``augment=False``; any other
    input (token ids ``[N, T]``, feature vectors ``[N, F]``, frames ``[N, T, F]``) is batched
    as it is: integers as int32, floats as float32.

    Args:
      inputs: ``[N, ...]`` array, one example per row.
      labels: ``[N]`` integer array with values in ``[0, num_classes)``.
      num_classes: number of classes.
      batch_size, training, shuffle_buffer, seed: as in `prepare_dataset`.
      augment: pad-crop-flip images (`augment_image`); None: when training on images. Other
        inputs have no augmentation here (True for them is an error).

    Returns:
      The batched ``tf.data.Dataset``.
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.ndim < 2 or inputs.dtype.kind not in "uif":
        raise ValueError(f"inputs must be a numeric array [N, ...] with one example per row "
                         f"(images [N, H, W, C], token ids [N, T], features [N, F]), got shape "
                         f"{inputs.shape} dtype {inputs.dtype}; add a batch axis with x[None].")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) \
            or len(labels) != len(inputs):
        raise ValueError(f"labels must be a 1-D integer array of length {len(inputs)} "
                         f"(one per example), got shape {labels.shape} dtype {labels.dtype}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for num_classes="
                         f"{num_classes}, found min {labels.min()} max {labels.max()}; "
                         "fix num_classes or remap the labels.")
    images = inputs.ndim == 4
    if images:
        inputs = checked_pixels(inputs)
    else:
        if augment:
            raise ValueError(f"augment=True crops and flips images [N, H, W, C]; these inputs "
                             f"have shape {inputs.shape}. Augment them before make_dataset, "
                             "or pass augment=None.")
        augment = False
        inputs = inputs.astype(np.float32 if inputs.dtype.kind == "f" else np.int32)
    if training and len(inputs) < batch_size:
        raise ValueError(f"{len(inputs)} training examples are fewer than batch_size="
                         f"{batch_size}; with drop_remainder there would be 0 steps.")
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels.astype(np.int32)))
    return prepare_dataset(ds, batch_size=batch_size, training=training, augment=augment,
                           shuffle_buffer=shuffle_buffer, seed=seed)


def checked_pixels(images):
    """Images [N, H, W, C] with pixels in [0, 255], as uint8 (integers) or float32 (floats)."""
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"pixel values must lie in [0, 255], found [{images.min()}, "
                         f"{images.max()}]; rescale images (e.g. multiply [0, 1] floats by 255).")
    return images.astype(np.float32 if images.dtype.kind == "f" else np.uint8)


def check_batch_size(batch_size):
    """Fails with a ConfigError unless `batch_size` is an integer >= 1."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch sizes must be integers >= 1, got {batch_size!r}.")


def check_enough_examples(num_train, batch_size):
    """Fails with a ConfigError when the training set fills no full batch (the training
    pipeline drops the remainder, so an epoch would have no step)."""
    if num_train < batch_size:
        raise ConfigError(f"The training set has {num_train} examples, fewer than "
                          f"batch_size={batch_size}: drop_remainder would give 0 steps. "
                          "Use more train_examples or a smaller batch_size.")


def subset_size(requested, available, split):
    """How many examples of `split` to use: `requested` (None: all `available`), checked."""
    if requested is None:
        return available
    if not 1 <= requested <= available:
        raise ConfigError(f"Asked for {requested} examples of split {split!r}, which has "
                          f"{available}; use a value between 1 and {available} (or None).")
    return requested


def folder_split(directory, split, requested, class_names=None):
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
    order = order[:subset_size(requested, len(paths), split)]
    return classes, [paths[i] for i in order], [labels[i] for i in order]


def folder_splits(directory, train_split, eval_split, train_examples, eval_examples):
    """(class names, (paths, labels) of the training split, the same of the evaluation split) of
    the folder dataset ``<directory>/<split>/<class_name>/*``; both splits share the classes."""
    if not directory or not tf.io.gfile.isdir(directory):
        raise MissingInputError(f"Dataset folder {directory!r} does not exist; pass "
                                "directory=<root> holding <split>/<class_name>/*.png|jpg|jpeg.")
    class_names, *train = folder_split(directory, train_split, train_examples)
    _, *evals = folder_split(directory, eval_split, eval_examples, class_names)
    return class_names, tuple(train), tuple(evals)
