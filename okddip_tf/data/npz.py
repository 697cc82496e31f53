"""The ``npz`` data source: classification arrays in one ``.npz`` file, without TensorFlow.

    okddip train ... --config.data.source=npz --config.data.path=cifar100.npz

Two layouts are read, for each split name (``data.train_split``, ``data.eval_split``):
  raw:  ``x_<split>`` ``[N, ...]`` and ``y_<split>`` integer ``[N]``
        (``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``), where ``x`` is
        uint8 images ``[N, H, W, 3]``, integer token ids ``[N, T]``, float features ``[N, F]``
        or float frames ``[N, T, F]``;
  JPEG: ``<split>_jpeg`` uint8 (all JPEG files concatenated), ``<split>_offsets`` int64
        ``[N + 1]`` (file i is ``jpeg[offsets[i]:offsets[i + 1]]``) and ``y_<split>``, the
        compact CIFAR-100 copy's layout. The images are decoded once per process with Pillow.
Optional keys: ``num_classes`` (else the largest label + 1) and ``class_names``.

Images get the CIFAR crop-and-flip when training and a pixel normalisation in the model; token
ids (as int32) and features (as float32) go to the model as they are, which must then be your
own (``model.backbone`` a ``.keras`` file or ``package.module:factory``).

Training order and augmentation are host-side random draws that depend only on (seed, epoch)
(`okddip_tf.data.epochs`), so a resumed run sees the batches of a run that never stopped; the
crop and flip (the same semantics as `okddip_tf.data.pipeline.augment_image`) run on the batch as
a whole: in a jitted pre-step on the accelerator under JAX (`okddip_tf.data.jax_batches`), in
NumPy on the host inside a tf.data pipeline under TensorFlow.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np

from okddip_tf.data.epochs import crop_flip, epoch_batches, epoch_numbers
from okddip_tf.data.info import KNOWN_PIXEL_STATS, DatasetInfo

STATS_EXAMPLES = 5000  # leading training images whose pixels give an unknown dataset's mean/std
LAYOUT_HELP = ("an .npz with x_<split> (uint8 images [N, H, W, 3], integer token ids [N, T], float "
               "features [N, F] or frames [N, T, F]) and y_<split> (integer [N]), or the JPEG "
               "layout <split>_jpeg, <split>_offsets and y_<split>")


def check_npz(path):
    """The open `.npz` file at `path`, or a clear error."""
    if not path:
        raise ValueError("data.source='npz' needs data.path: pass --config.data.path=FILE.npz.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.path={path!r} is not a file; pass {LAYOUT_HELP}.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"data.path={path!r} is not a readable .npz ({err}); pass "
                         f"{LAYOUT_HELP}.") from err


def split_size(data, split, path):
    """Examples in `split` of an open npz; fails saying which keys exist."""
    if "[" in split:
        raise ValueError(f"Split {split!r}: the npz source has no tfds slicing; use "
                         "data.train_examples / data.eval_examples for the first N examples.")
    if f"y_{split}" not in data.files or not ({f"x_{split}"} <= set(data.files) or {
            f"{split}_jpeg", f"{split}_offsets"} <= set(data.files)):
        raise ValueError(f"{path} has no split {split!r} (keys: {sorted(data.files)}); expected "
                         f"{LAYOUT_HELP}.")
    return len(data[f"y_{split}"])


@functools.lru_cache(maxsize=4)
def _read_split(path, mtime_ns, size_bytes, split, count):
    """(inputs, labels) of the first `count` examples; cached per file version."""
    del mtime_ns, size_bytes  # part of the cache key only
    with check_npz(path) as data:
        split_size(data, split, path)
        labels = np.asarray(data[f"y_{split}"][:count])
        if f"x_{split}" in data.files:
            examples = np.asarray(data[f"x_{split}"][:count])
        else:
            examples = decode_jpegs(data[f"{split}_jpeg"], data[f"{split}_offsets"], count, path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: y_{split} must be a 1-D integer array of class ids, got shape "
                         f"{labels.shape} dtype {labels.dtype}.")
    if len(examples) != len(labels):
        raise ValueError(f"{path}: x_{split} holds {len(examples)} examples but y_{split} "
                         f"{len(labels)} labels; they must match.")
    if examples.ndim == 4:
        examples = check_pixels(examples, path, split)
    else:
        examples = check_other_inputs(examples, path, split)
    examples.setflags(write=False)
    labels = labels.astype(np.int32)
    labels.setflags(write=False)
    return examples, labels


def check_pixels(images, path, split):
    """uint8 images [N, H, W, 3] from integer pixels in [0, 255], or a clear error."""
    if images.shape[-1] != 3:
        raise ValueError(f"{path}: the {split} images must be [N, H, W, 3], got shape "
                         f"{images.shape}.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or (
                images.size and (images.min() < 0 or images.max() > 255)):
            raise ValueError(f"{path}: the {split} images must be uint8 pixels in [0, 255], got "
                             f"dtype {images.dtype}; convert them, e.g. (x * 255).astype('uint8').")
        images = images.astype(np.uint8)
    return images


def check_other_inputs(array, path, split):
    """Token ids [N, T] as int32, or features [N, F] and frames [N, T, F] as float32."""
    if array.ndim not in (2, 3) or not (np.issubdtype(array.dtype, np.integer)
                                        or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{path}: x_{split} has shape {array.shape} and dtype {array.dtype}; "
                         f"expected {LAYOUT_HELP}.")
    if array.ndim == 3 and np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: x_{split} is integer {array.shape}: integer inputs are token "
                         "ids [N, T]. Store images as uint8 [N, H, W, 3] (grayscale: "
                         "np.repeat(x[..., None], 3, axis=-1)) and frames as floats.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: x_{split} holds NaN or infinite values; fill or drop "
                             "them before training.")
        return array.astype(np.float32)
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{path}: x_{split} is integer, read as token ids, which must lie in "
                         f"[0, 2**31), found [{array.min()}, {array.max()}]; store features "
                         "as floats (x.astype('float32')).")
    return array.astype(np.int32)


def decode_jpegs(blob, offsets, count, path=""):
    """Decodes the first `count` JPEG files of a concatenated `blob` into uint8 RGB images."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < count + 1 or offsets[count] > len(blob):
        raise ValueError(f"{path}: the JPEG offsets ({offsets.shape}) do not cover {count} files "
                         f"of a {len(blob)}-byte blob; offsets must hold N + 1 positions.")
    data = memoryview(np.ascontiguousarray(blob))
    images = None
    for i in range(count):
        with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as image:
            pixels = np.asarray(image.convert("RGB"))
        if images is None:
            images = np.empty((count, *pixels.shape), np.uint8)
        elif pixels.shape != images.shape[1:]:
            raise ValueError(f"{path}: JPEG {i} is {pixels.shape}, but the first is "
                             f"{images.shape[1:]}; all images must have one size.")
        images[i] = pixels
    return images if images is not None else np.zeros((0, 1, 1, 3), np.uint8)


def read_split(path, split, count=None):
    """(inputs, int32 labels [N]) of the first `count` (None: all) examples: uint8 images
    [N, H, W, 3], int32 token ids [N, T], or float32 features [N, F] or frames [N, T, F].

    Decoded JPEGs are kept for the process: training and its resumption read them once.
    """
    with check_npz(path) as data:
        available = split_size(data, split, path)
    if count is None:
        count = available
    if not 1 <= count <= available:
        raise ValueError(f"Asked for {count} examples of split {split!r}, which has "
                         f"{available} in {path}; use a value between 1 and {available} (or None).")
    stat = os.stat(path)
    return _read_split(os.path.abspath(path), stat.st_mtime_ns, stat.st_size, split, count)


def num_classes_of(path, splits):
    with check_npz(path) as data:
        if "num_classes" in data.files:
            return int(data["num_classes"])
        return int(max(np.max(data[f"y_{split}"]) for split in splits)) + 1


def class_names_of(path):
    with check_npz(path) as data:
        if "class_names" in data.files:
            return tuple(str(name) for name in data["class_names"])
    return None


def pixel_stats(images, max_examples=STATS_EXAMPLES):
    """Per-channel (population) mean and std in pixel units over the first images."""
    pixels = images[:max_examples].reshape(-1, images.shape[-1]).astype(np.float64)
    return tuple(map(float, pixels.mean(axis=0))), tuple(map(float, pixels.std(axis=0)))

class HostBatches:
    """Training batches made on the host (NumPy): each iteration is the next epoch(s)."""

    def __init__(self, images, labels, *, batch_size, augment, seed, epochs, initial_epoch):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.augment, self.seed = augment, seed
        self.epochs = epoch_numbers(epochs, initial_epoch)
        self.passes = 0

    def __iter__(self):
        epochs = self.epochs if self.epochs is not None else [self.passes]
        self.passes += 1
        for epoch in epochs:
            for index, offset_y, offset_x, flip in epoch_batches(
                    self.seed, epoch, len(self.images), self.batch_size):
                batch = self.images[index]
                if self.augment:
                    batch = crop_flip(np, batch, offset_y, offset_x, flip)
                yield batch, self.labels[index]


def load_arrays(*, name, path, train_split, eval_split, train_examples, eval_examples):
    """(train (inputs, labels), eval (inputs, labels), DatasetInfo) of an npz file."""
    train = read_split(path, train_split, train_examples)
    evals = read_split(path, eval_split, eval_examples)
    if train[0].shape[1:] != evals[0].shape[1:] or train[0].dtype != evals[0].dtype:
        raise ValueError(f"{path}: x_{train_split} is {describe(train[0])} but x_{eval_split} "
                         f"is {describe(evals[0])}; they must match.")
    num_classes = num_classes_of(path, (train_split, eval_split))
    for split, (_, labels) in ((train_split, train), (eval_split, evals)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{path}: {split} labels must lie in [0, {num_classes}), found "
                             f"[{labels.min()}, {labels.max()}]; fix the labels or num_classes.")
    shape = tuple(train[0].shape[1:])
    common = dict(name=name, num_classes=num_classes, class_names=class_names_of(path),
                  num_train_examples=len(train[1]), num_eval_examples=len(evals[1]))
    if is_images(train[0]):
        # A known dataset gets its standard constants, as from tfds; others are measured.
        mean, std = KNOWN_PIXEL_STATS.get(name) or pixel_stats(train[0])
        info = DatasetInfo(image_shape=shape, pixel_mean=tuple(mean), pixel_std=tuple(std),
                           **common)
    else:
        info = DatasetInfo(image_shape=None, pixel_mean=(), pixel_std=(), input_shape=shape,
                           input_dtype=str(train[0].dtype), **common)
    return train, evals, info


def is_images(array):
    """Whether the source's arrays are images (uint8 [N, H, W, 3], as `_read_split` reads every
    4-D array), which get augmented."""
    return array.ndim == 4


def describe(array):
    """E.g. "int32 [N, 16]"."""
    return f"{array.dtype} [N, {', '.join(map(str, array.shape[1:]))}]"


def load_datasets(*, name="cifar100", path=None, train_split="train", eval_split="test",
                  train_examples=None, eval_examples=None, batch_size=128, eval_batch_size=None,
                  augment=True, seed=None, epochs=None, initial_epoch=0):
    """The npz source's training and evaluation batches for the Keras backend in use.

    JAX: `okddip_tf.data.jax_batches` batches (the arrays on the accelerator, augmented there); no
    TensorFlow is imported. TensorFlow: tf.data pipelines of the same batches. The arguments
    mean what they mean in `okddip_tf.data.load_datasets` (shuffling is a full permutation per
    epoch, so there is no shuffle buffer, and the arrays are always in memory).

    Returns:
      ``(train_batches, eval_batches, info)``.
    """
    import keras  # pylint: disable=import-outside-toplevel

    for size in (batch_size, eval_batch_size or batch_size):
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"batch sizes must be integers >= 1, got {size!r}.")
    train, evals, info = load_arrays(name=name, path=path, train_split=train_split,
                                     eval_split=eval_split, train_examples=train_examples,
                                     eval_examples=eval_examples)
    if len(train[1]) < batch_size:
        raise ValueError(f"The training set has {len(train[1])} examples, fewer than "
                         f"batch_size={batch_size}: drop_remainder would give 0 steps. "
                         "Use more train_examples or a smaller batch_size.")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    # The crop-and-flip is for images; token ids and features go in as they are.
    options = dict(batch_size=batch_size, eval_batch_size=eval_batch_size or batch_size,
                   augment=augment and info.image_shape is not None, seed=seed, epochs=epochs,
                   initial_epoch=initial_epoch)
    backend = keras.backend.backend()
    if backend == "jax":
        # Imported here: JAX is only needed (and installed) for the JAX backend.
        from okddip_tf.data import jax_batches  # pylint: disable=import-outside-toplevel

        return (*jax_batches.make_batches(train, evals, **options), info)
    if backend == "tensorflow":
        return (*tf_datasets(train, evals, **options), info)
    raise ValueError(f"data.source='npz' supports the jax and tensorflow Keras backends, not "
                     f"{backend!r}; set KERAS_BACKEND=jax or tensorflow.")


def tf_datasets(train, evals, *, batch_size, eval_batch_size, augment, seed, epochs,
                initial_epoch):
    """tf.data pipelines of the host-made batches (the TensorFlow backend)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    images, labels = train
    batches = HostBatches(images, labels, batch_size=batch_size, augment=augment, seed=seed,
                          epochs=epochs, initial_epoch=initial_epoch)
    signature = (tf.TensorSpec([batch_size, *images.shape[1:]], tf.as_dtype(images.dtype)),
                 tf.TensorSpec([batch_size], tf.int32))
    train_ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    num_epochs = 1 if epochs is None else epochs - initial_epoch
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(
        num_epochs * (len(images) // batch_size))).prefetch(2)
    eval_ds = tf.data.Dataset.from_tensor_slices(evals).batch(eval_batch_size).prefetch(2)
    return train_ds, eval_ds
