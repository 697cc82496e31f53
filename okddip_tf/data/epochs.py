"""What each epoch of the npz source shows, drawn on the host, and the crop-and-flip applying it.

An epoch's example order and each example's crop offsets and flip are NumPy draws that depend only
on (seed, epoch) (`epoch_draws`), so a resumed run sees the batches of a run that never stopped.
`crop_flip` applies them to a whole batch with NumPy (`okddip_tf.data.npz`, on the host) or
jax.numpy (`okddip_tf.data.jax_batches`, on the accelerator). Imports neither TensorFlow nor JAX.
"""

from __future__ import annotations

import numpy as np

PAD = 4  # zero-padding before the random crop, in the tf.data pipeline too


def epoch_draws(seed, epoch, size, pad=PAD):
    """An epoch's example order and augmentation draws, a pure function of (seed, epoch).

    Returns ``(order, offset_y, offset_x, flip)``, each ``[size]``: position i of the epoch shows
    example ``order[i]``, cropped at rows ``offset_y[i]..+H`` and columns ``offset_x[i]..+W`` of
    the zero-padded image (offsets uniform in ``[0, 2 * pad]``), mirrored when ``flip[i]``
    (probability 1/2).
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(size).astype(np.int32)
    offset_y, offset_x = rng.integers(0, 2 * pad + 1, size=(2, size), dtype=np.int32)
    flip = rng.random(size) < 0.5
    return order, offset_y, offset_x, flip


def crop_flip(xp, images, offset_y, offset_x, flip, pad=PAD):
    """Pads a batch with `pad` zeros, crops each image at its offsets, mirrors the flipped ones.

    The semantics of `okddip_tf.data.pipeline.augment_image` (pad 4, random crop of the input
    size, random left-right flip of the crop), with the draws given. `xp` is `numpy` or
    `jax.numpy`: one gather per axis, so the whole batch is cropped at once (on the accelerator
    under JAX).

    Args:
      images: ``[B, H, W, C]``.
      offset_y, offset_x: ``[B]`` integers in ``[0, 2 * pad]``.
      flip: ``[B]`` booleans.
    """
    height, width = images.shape[1], images.shape[2]
    padded = xp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = offset_y[:, None] + xp.arange(height)[None, :]
    columns = xp.where(flip[:, None], offset_x[:, None] + (width - 1 - xp.arange(width))[None, :],
                       offset_x[:, None] + xp.arange(width)[None, :])
    cropped = xp.take_along_axis(padded, rows[:, :, None, None], axis=1)
    return xp.take_along_axis(cropped, columns[:, None, :, None], axis=2)


def epoch_batches(seed, epoch, size, batch_size):
    """Yields ``(index, offset_y, offset_x, flip)`` of every full batch of epoch `epoch`."""
    order, offset_y, offset_x, flip = epoch_draws(seed, epoch, size)
    for start in range(0, size - batch_size + 1, batch_size):
        part = slice(start, start + batch_size)
        yield order[part], offset_y[part], offset_x[part], flip[part]


def epoch_numbers(epochs, initial_epoch):
    """The epochs a training stream holds: initial..epochs-1, or (epochs None) one per pass."""
    if epochs is None:
        if initial_epoch:
            raise ValueError("initial_epoch needs epochs: pass the epoch to stop before.")
        return None
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"Need 0 <= initial_epoch < epochs, got initial_epoch={initial_epoch} "
                         f"and epochs={epochs}.")
    return range(initial_epoch, epochs)
