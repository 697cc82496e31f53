"""The tfds source that both tf.data pipelines read: the builder, prepared, and its labelled splits.

The CIFAR pipeline (`okddip_tf.data.sources`) decodes the images here; the ImageNet one
(`okddip_tf.data.imagenet`) keeps them encoded and decodes them inside its crop. Both get the
same checks and messages: an unknown dataset name with its close matches, a dataset that is not
prepared (downloaded once where allowed, or what to run where it is not: `download`), a split
the dataset lacks, and a dataset without image and label features.
"""

from __future__ import annotations

import difflib
import os

import tensorflow as tf

from okddip_tf import compat
from okddip_tf.data import download as download_module
from okddip_tf.data.pipeline import subset_size
from okddip_tf.errors import ConfigError, InputError


def prepared_builder(name, data_dir=None, download=True):
    """The tfds builder of `name` in `data_dir` ($TFDS_DATA_DIR, then tfds' default, when None),
    its dataset prepared: downloaded once where `download` and the host allow it."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

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
    return builder


def labelled_splits(builder, name, requests, decoders=None):
    """One (image, int32 label) dataset per (split, examples) in `requests`: the first
    `examples` of the split (None: all of it), in tfds' file order; `decoders` as in
    `builder.as_dataset` (e.g. to keep the images encoded)."""
    if not {"image", "label"} <= set(builder.info.features):
        raise InputError(f"{name!r} has features {list(builder.info.features)}; only "
                         "datasets with 'image' and 'label' features are supported.")
    datasets = []
    for split, requested in requests:
        if split.split("[")[0] not in builder.info.splits:
            raise ConfigError(f"{name!r} has no split {split!r}; available: "
                              f"{sorted(builder.info.splits)}.")
        size = subset_size(requested, builder.info.splits[split].num_examples, split)
        if requested is not None and "[" not in split:
            split = f"{split}[:{size}]"  # reads only those examples' files
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                                decoders=decoders)
        datasets.append(ds.take(size).map(lambda image, label: (image, tf.cast(label, tf.int32))))
    return datasets


def label_meta(builder):
    """The `DatasetInfo` fields a tfds dataset's label feature gives: classes and their names."""
    label = builder.info.features["label"]
    return dict(num_classes=label.num_classes,
                class_names=tuple(label.names) if label.names else None)
