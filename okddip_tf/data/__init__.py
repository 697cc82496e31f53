"""Data sources: tfds, folders, ImageNet-style folders and tfds, npz arrays, JAX device batches.

    from okddip_tf import data
    train_ds, eval_ds, info = data.load_datasets(name="cifar100", batch_size=128)

The public names below are imported on first use, so `import okddip_tf.data` starts no
TensorFlow, and neither do the npz source and the JAX batches (`okddip_tf.data.npz`,
`okddip_tf.data.jax_batches`), which JAX runs use without TensorFlow installed.

Modules, lowest first (each imports only those above it in this list):
  info         `DatasetInfo`, what every source reports, and the known pixel statistics
  download     whether and how a missing tfds dataset is downloaded
  epochs       the npz source's per-epoch draws and crop-and-flip (NumPy or jax.numpy)
  jax_batches  batches made on the accelerator under JAX
  npz          the npz source: arrays from an ``.npz`` file, for the JAX or TensorFlow backend
  pipeline     the CIFAR-style tf.data pipeline and the helpers the tf.data sources share
  tfds_source  a tfds dataset, prepared, as labelled splits (both pipelines read it)
  imagenet     the ImageNet-style tf.data pipeline
  sources      the tfds and folder sources and `load_datasets`, which picks source and pipeline
  synthetic    a synthetic token-id task with a learnable rule (NumPy only)
"""

import importlib

# public name -> the submodule defining it
_EXPORTS = {
    "DatasetInfo": "info",
    "KNOWN_PIXEL_STATS": "info",
    "PAD": "epochs",
    "AUTOTUNE": "pipeline",
    "IMAGE_EXTENSIONS": "pipeline",
    "augment_image": "pipeline",
    "compute_pixel_stats": "pipeline",
    "make_dataset": "pipeline",
    "prepare_dataset": "pipeline",
    "load_datasets": "sources",
    "marker_tokens": "synthetic",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
