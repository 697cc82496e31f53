"""ImageNet-style input: tfds `imagenet2012` or a folder of class subfolders of JPEG files.

The standard augmentation of the ResNet papers (and torchvision's reference recipe), decoded and
augmented inside tf.data:

- training: a random-resized crop (area 8%-100% of the image, aspect ratio 3/4-4/3, 10 attempts,
  else the whole image) resized bilinearly to `image_size` (224), then a random horizontal flip;
  JPEG files are decoded only inside the crop window (`decode_and_crop_jpeg`);
- evaluation: the shorter side resized to `resize_size` (256 for 224; by default
  round(image_size * 256 / 224)), then the centre `image_size` square.

Images leave the pipeline as uint8 [0, 255] (the models normalise them, with the ImageNet mean and
std) and labels as int32. Shuffling and augmentation are a pure function of (seed, epoch), as in
`okddip_tf.data.pipeline`, so a resumed run sees the batches of a run never stopped. The tfds
source is `okddip_tf.data.tfds_source`, as for the CIFAR pipeline; `imagenet2012` must be prepared
by the user (its archives need a manual download: the error says what to run).

Select it with `data.pipeline="imagenet"` (see configs/imagenet_resnet34.py).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from okddip_tf.data import pipeline, tfds_source
from okddip_tf.data.info import DatasetInfo
from okddip_tf.errors import ConfigError

AUTOTUNE = tf.data.AUTOTUNE
IMAGENET_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def default_resize_size(image_size):
    """256 for 224: the evaluation resize keeps the standard 224/256 ratio."""
    return int(round(image_size * 256 / 224))


def crop_window(image_shape, seed):
    """A random-resized-crop window [y, x, height, width] of an image of shape [H, W, C]."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed, min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def to_uint8(image):
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def train_image(encoded, seed, image_size):
    """Random-resized crop of an encoded image to image_size x image_size, randomly flipped."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    def jpeg():
        window = crop_window(tf.io.extract_jpeg_shape(encoded), crop_seed)
        return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = decode(encoded)
        window = crop_window(tf.shape(image), crop_seed)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image = to_uint8(tf.image.resize(crop, [image_size, image_size], method="bilinear"))
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_image(encoded, image_size, resize_size=None):
    """Shorter side resized to resize_size, then the centre image_size square."""
    resize_size = resize_size or default_resize_size(image_size)
    image = decode(encoded)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), resize_size)
    resized = tf.image.resize(image, new_shape, method="bilinear")
    # torchvision's CenterCrop offsets: round((size - crop) / 2).
    top = tf.cast(tf.round(tf.cast(new_shape[0] - image_size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_shape[1] - image_size, tf.float32) / 2), tf.int32)
    crop = resized[top:top + image_size, left:left + image_size]
    return tf.ensure_shape(to_uint8(crop), [image_size, image_size, 3])


def load_datasets(*, source="tfds", name="imagenet2012", data_dir=None, directory=None,
                  train_split="train", eval_split="validation", train_examples=None,
                  eval_examples=None, batch_size=256, eval_batch_size=None, augment=True,
                  shuffle_buffer=10_000, cache=False, seed=None, epochs=None, initial_epoch=0,
                  image_size=224, resize_size=None, download=True):
    """The ImageNet-style training and evaluation pipelines and their `DatasetInfo`.

    Args:
      source: "tfds" (a prepared tfds dataset of encoded images, e.g. imagenet2012) or "folder"
        (`<directory>/<split>/<class_name>/*.jpg|jpeg|png`, images of any size).
      image_size: the crop size (224); resize_size: the evaluation resize (None: 256 for 224).
      cache: cache the encoded files in memory (ImageNet's 140 GB do not fit: default False).
      download: download and prepare a missing tfds dataset where tfds can (not imagenet2012,
        whose archives need a manual download: the error says what to run).
      Other arguments as in `okddip_tf.data.load_datasets`; augment=False trains on the
      evaluation transform.

    Returns:
      ``(train_ds, eval_ds, info)``; `info.image_shape` is (image_size, image_size, 3) and the
      pixel statistics are ImageNet's.

    Raises:
      FileNotFoundError: the tfds dataset is not prepared, or the folder is missing.
      ValueError: bad arguments or inconsistent folders.
    """
    pipeline.check_batch_size(batch_size)
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}.")
    resize_size = resize_size or default_resize_size(image_size)
    if resize_size < image_size:
        raise ConfigError(f"resize_size ({resize_size}) must be >= image_size ({image_size}).")
    if source == "tfds":
        train, evals, meta = load_tfds_encoded(name, data_dir, train_split, eval_split,
                                               train_examples, eval_examples, download)
    elif source == "folder":
        train, evals, meta = load_folder_encoded(directory, train_split, eval_split,
                                                 train_examples, eval_examples)
    else:
        raise ConfigError(f"Unknown data source {source!r}; use 'tfds' or 'folder'.")
    num_train, num_eval = int(train.cardinality()), int(evals.cardinality())
    pipeline.check_enough_examples(num_train, batch_size)
    info = DatasetInfo(name=name, num_train_examples=num_train, num_eval_examples=num_eval,
                       image_shape=(image_size, image_size, 3), pixel_mean=IMAGENET_MEAN,
                       pixel_std=IMAGENET_STD, **meta)
    if cache:
        train, evals = train.cache(), evals.cache()
    keys = pipeline.epoch_keys(seed, epochs, initial_epoch)

    def one_epoch(key):
        shuffle_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        ds = pipeline.shuffle_epoch(train, shuffle_key, shuffle_buffer)
        if augment:
            ds = ds.enumerate().map(lambda i, example: (train_image(
                example[0], tf.random.experimental.stateless_fold_in(augment_key, i),
                image_size), example[1]), num_parallel_calls=AUTOTUNE)
        else:
            ds = ds.map(lambda encoded, label: (eval_image(encoded, image_size, resize_size),
                                                label), num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)

    train_ds = keys.flat_map(one_epoch)
    num_epochs = 1 if epochs is None else epochs - initial_epoch
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(
        (num_train // batch_size) * num_epochs)).prefetch(AUTOTUNE)
    eval_ds = (evals.map(lambda encoded, label: (eval_image(encoded, image_size, resize_size),
                                                 label), num_parallel_calls=AUTOTUNE)
               .batch(eval_batch_size or batch_size, num_parallel_calls=AUTOTUNE)
               .prefetch(AUTOTUNE))
    return train_ds, eval_ds, info


def load_tfds_encoded(name, data_dir, train_split, eval_split, train_examples, eval_examples,
                      download=True):
    """(encoded image bytes, int32 label) datasets of a prepared tfds dataset, and its meta."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder = tfds_source.prepared_builder(name, data_dir, download)
    train, evals = tfds_source.labelled_splits(
        builder, name, ((train_split, train_examples), (eval_split, eval_examples)),
        decoders={"image": tfds.decode.SkipDecoding()})
    return train, evals, tfds_source.label_meta(builder)


def load_folder_encoded(directory, train_split, eval_split, train_examples, eval_examples):
    """(file bytes, int32 label) datasets of `<directory>/<split>/<class>/*` and their meta."""
    class_names, *splits = pipeline.folder_splits(directory, train_split, eval_split,
                                                  train_examples, eval_examples)
    datasets = [tf.data.Dataset.from_tensor_slices((paths, np.int32(labels)))
                .map(lambda path, label: (tf.io.read_file(path), label),
                     num_parallel_calls=AUTOTUNE)
                for paths, labels in splits]
    return datasets[0], datasets[1], dict(num_classes=len(class_names),
                                          class_names=tuple(class_names))
