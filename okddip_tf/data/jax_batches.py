"""Batches for `okddip train` on JAX: the arrays live on the accelerator and are augmented there.

The host only draws, per epoch, the example order and each example's crop offsets and flip
(`okddip_tf.data.epochs.epoch_draws`, a pure function of (seed, epoch)); a jitted pre-step gathers
the batch from the device-resident images and crops and flips it as a whole, so no image goes
through Python and the step's input is already on the device. Normalisation happens inside the model
(its first layer), in the jitted training step. No TensorFlow is imported.
"""

import functools

import jax
import jax.numpy as jnp
import keras
import numpy as np

from okddip_tf.data.epochs import crop_flip, epoch_batches, epoch_numbers


@functools.partial(jax.jit, static_argnames=("augment",))
def device_batch(images, labels, index, offset_y, offset_x, flip, augment=True):
    """The batch `index` of the device arrays, cropped and flipped by the given draws."""
    batch = jnp.take(images, index, axis=0)
    if augment:
        batch = crop_flip(jnp, batch, offset_y, offset_x, flip)
    return batch, jnp.take(labels, index, axis=0)


class DeviceBatches:
    """Training batches made on the device; iterating yields the epochs the stream holds.

    With `epochs`, one iteration yields epochs ``initial_epoch .. epochs - 1`` back to back (give
    `fit` its ``steps_per_epoch``); without, each iteration is the next epoch.
    """

    def __init__(self, images, labels, *, batch_size, augment, seed, epochs, initial_epoch):
        self.images, self.labels = jax.device_put(images), jax.device_put(labels)
        self.size, self.batch_size, self.augment, self.seed = len(images), batch_size, augment, seed
        self.epochs = epoch_numbers(epochs, initial_epoch)
        self.passes = 0

    def __len__(self):
        epochs = 1 if self.epochs is None else len(self.epochs)
        return epochs * (self.size // self.batch_size)

    def __iter__(self):
        epochs = self.epochs if self.epochs is not None else [self.passes]
        self.passes += 1
        for epoch in epochs:
            for draws in epoch_batches(self.seed, epoch, self.size, self.batch_size):
                yield device_batch(self.images, self.labels, *draws, augment=self.augment)


class EvalBatches(keras.utils.PyDataset):
    """Evaluation batches in order (the last one may be smaller), re-iterable every epoch."""

    def __init__(self, images, labels, batch_size):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[part], self.labels[part]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def make_batches(train, evals, *, batch_size, eval_batch_size, augment, seed, epochs,
                 initial_epoch):
    """(training batch generator for `fit`, evaluation PyDataset) of in-memory arrays."""
    images, labels = train
    batches = DeviceBatches(np.asarray(images), np.asarray(labels), batch_size=batch_size,
                            augment=augment, seed=seed, epochs=epochs, initial_epoch=initial_epoch)
    return iter(batches), EvalBatches(*evals, eval_batch_size)
