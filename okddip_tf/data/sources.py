"""The tfds and folder sources of the tf.data pipelines, and `load_datasets`, which picks a source.

`load_datasets` reads a tfds dataset (downloaded once where downloads are allowed and its host
answers: `okddip_tf.data.download`) or a folder of class subfolders through the CIFAR pipeline
(`okddip_tf.data.pipeline`) or the ImageNet one (`okddip_tf.data.imagenet`), and hands the npz
source to `okddip_tf.data.npz`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from okddip_tf import progress
from okddip_tf.data import imagenet, npz, tfds_source
from okddip_tf.data.info import KNOWN_PIXEL_STATS, DatasetInfo
from okddip_tf.data.pipeline import (AUTOTUNE, check_batch_size, check_enough_examples,
                                     compute_pixel_stats, folder_splits, prepare_dataset)
from okddip_tf.errors import ConfigError, InputError


def load_datasets(*, source="tfds", name="cifar100", data_dir=None, directory=None,
                  path=None, train_split="train", eval_split="test", train_examples=None,
                  eval_examples=None, batch_size=128, eval_batch_size=None, augment=True,
                  shuffle_buffer=50_000, cache=True, seed=None, epochs=None, initial_epoch=0,
                  download=True, pipeline="cifar", image_size=224):
    """Loads the training and evaluation pipelines and their `DatasetInfo`.

    Args:
      source: ``"tfds"`` (a tfds dataset, downloaded once if needed), ``"folder"``
        (``<directory>/<split>/<class_name>/*.png|jpg|jpeg``) or ``"npz"`` (arrays in the
        ``.npz`` file `path`: see `okddip_tf.data.npz`, which builds those pipelines).
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
        host answers; $OKDDIP_OFFLINE=1 overrides): see `okddip_tf.data.download`.
      pipeline: ``"cifar"`` (`okddip_tf.data.pipeline`) or ``"imagenet"``
        (`okddip_tf.data.imagenet`: images of any size, random-resized crops to `image_size`;
        evaluation resize and centre crop).
      image_size: the crop size of the ``"imagenet"`` pipeline.

    Returns:
      ``(train_ds, eval_ds, info)``.

    Raises:
      ValueError: bad arguments, unknown tfds name, inconsistent folder data.
      FileNotFoundError: dataset not prepared in the data dir and not downloaded (downloads
        off or its host unreachable), or folder missing.
    """
    if source == "npz":
        return npz.load_datasets(
            name=name, path=path, train_split=train_split, eval_split=eval_split,
            train_examples=train_examples, eval_examples=eval_examples, batch_size=batch_size,
            eval_batch_size=eval_batch_size, augment=augment, seed=seed, epochs=epochs,
            initial_epoch=initial_epoch)
    if pipeline == "imagenet":
        return imagenet.load_datasets(
            source=source, name=name, data_dir=data_dir, directory=directory,
            train_split=train_split, eval_split=eval_split, train_examples=train_examples,
            eval_examples=eval_examples, batch_size=batch_size, eval_batch_size=eval_batch_size,
            augment=augment, shuffle_buffer=shuffle_buffer, cache=cache, seed=seed,
            epochs=epochs, initial_epoch=initial_epoch, image_size=image_size,
            download=download)
    if pipeline != "cifar":
        raise ConfigError(f"Unknown data pipeline {pipeline!r}; use 'cifar' or 'imagenet'.")
    check_batch_size(batch_size)
    check_batch_size(eval_batch_size or batch_size)
    if source == "tfds":
        train, evals, meta = _load_tfds(name, data_dir, train_split, eval_split,
                                        train_examples, eval_examples, download)
    elif source == "folder":
        train, evals, meta = _load_folder(directory, train_split, eval_split,
                                          train_examples, eval_examples)
    else:
        raise ConfigError(f"Unknown data source {source!r}; use 'tfds', 'folder' or 'npz'.")
    num_train, num_eval = int(train.cardinality()), int(evals.cardinality())
    check_enough_examples(num_train, batch_size)
    if source == "tfds" and name in KNOWN_PIXEL_STATS:
        mean, std = KNOWN_PIXEL_STATS[name]
    else:
        with progress.step(f"Computing the pixel mean and std of {num_train} training images"):
            mean, std = compute_pixel_stats(train)
    progress.say(f"Data: {name} ({source}), {num_train} training and {num_eval} evaluation "
                 f"examples{', cached in memory by epoch 1' if cache else ''}.")
    info = DatasetInfo(name=name, num_train_examples=num_train, num_eval_examples=num_eval,
                       pixel_mean=tuple(mean), pixel_std=tuple(std), **meta)
    train_ds = prepare_dataset(train, batch_size=batch_size, training=True, augment=augment,
                               shuffle_buffer=shuffle_buffer, seed=seed, cache=cache,
                               epochs=epochs, initial_epoch=initial_epoch)
    eval_ds = prepare_dataset(evals, batch_size=eval_batch_size or batch_size,
                              training=False, cache=cache)
    return train_ds, eval_ds, info


def _load_tfds(name, data_dir, train_split, eval_split, train_examples, eval_examples,
               download=True):
    builder = tfds_source.prepared_builder(name, data_dir, download)
    train, evals = tfds_source.labelled_splits(
        builder, name, ((train_split, train_examples), (eval_split, eval_examples)))
    meta = dict(tfds_source.label_meta(builder),
                image_shape=tuple(builder.info.features["image"].shape))
    return train, evals, meta


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
    class_names, train, evals = folder_splits(directory, train_split, eval_split,
                                              train_examples, eval_examples)
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
