"""Keras' BatchNormalization with TensorFlow's fused kernel for training steps (speed only).

Keras 3 normalises a training batch with separate ops (mean, squared difference, mean, then a
multiply-add, and their gradients, about a dozen passes over the activations). On the CPU the
step of a ResNet-32 group spent about a fifth of its op time there. TensorFlow's FusedBatchNormV3
computes the same batch statistics and output in one kernel (oneDNN's where oneDNN is on) and has
a fused gradient.

The output is Keras' (and PyTorch's): y = gamma * (x - mean) / sqrt(var + eps) + beta with the
biased batch variance. The moving averages are `m <- momentum * m + (1 - momentum) * batch stat`
of the batch mean and of a batch variance that depends on `unbiased_moving_variance`:

* False (the default, Keras' maths): the *biased* batch variance. The fused kernel returns the
  unbiased one, which is scaled back by (n - 1) / n. Results match the unfused Keras path up to
  float rounding (tests/test_fused_layers.py).
* True (PyTorch's maths, what `batchnorm="pytorch"` builds, okddip_tf.models.common): the
  *unbiased* batch variance, var * n / (n - 1), n the values per channel, as
  torch.nn.BatchNorm2d updates `running_var` (its momentum 0.1 is Keras' 0.9). A training call
  the fused kernel cannot take (another backend, a mask, synchronised BN) computes the same
  update here; under synchronised BN on TensorFlow n counts every replica's values.

Everything else (inference, renorm, other ranks or axes of the unfused Keras path) runs Keras' own
code unchanged.

The class is named `BatchNormalization` on purpose: Keras names a layer's weights in a `.keras`
file after its class, so checkpoints written with `keras.layers.BatchNormalization` load into it
and back.
"""

import keras

IS_TENSORFLOW = keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="okddip_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose TensorFlow training step uses one fused kernel.

    Args:
      unbiased_moving_variance: update the moving variance with the unbiased batch variance
        (PyTorch) instead of the biased one (Keras); see the module's docstring.
    """

    def __init__(self, unbiased_moving_variance=False, **kwargs):
        super().__init__(**kwargs)
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        if self.unbiased_moving_variance and self.renorm:
            raise ValueError("unbiased_moving_variance (PyTorch's update) does not apply to "
                             "batch renormalisation.")

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and mask is None and self._fusable(inputs):
            return self._fused_training_call(inputs)
        if training and self.trainable and self.unbiased_moving_variance:
            return self._unbiased_training_call(inputs, mask)
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return {**super().get_config(), "unbiased_moving_variance": self.unbiased_moving_variance}

    def _update_moving_statistics(self, mean, variance):
        momentum = self.momentum
        moving_mean = keras.ops.cast(self.moving_mean, "float32")
        moving_variance = keras.ops.cast(self.moving_variance, "float32")
        self.moving_mean.assign(keras.ops.cast(
            moving_mean * momentum + mean * (1.0 - momentum), self.moving_mean.dtype))
        self.moving_variance.assign(keras.ops.cast(
            moving_variance * momentum + variance * (1.0 - momentum), self.moving_variance.dtype))

    def _unbiased_training_call(self, inputs, mask):
        """Keras' unfused training step with PyTorch's moving-variance update."""
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        mean, variance = self._moments(x, mask)  # biased, synchronised if the layer is
        if mask is None:
            count = 1
            for axis in self._reduction_axes:
                count *= ops.shape(x)[axis]
            count = ops.cast(count, "float32")
        else:
            count = ops.sum(ops.cast(mask, "float32"))
        if self.synchronized and IS_TENSORFLOW:
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            if context is not None:
                count = context.all_reduce("sum", count)
        correction = ops.where(count > 1.0, count / ops.maximum(count - 1.0, 1.0), 0.0)
        self._update_moving_statistics(mean, variance * correction)
        y = ops.batch_normalization(
            x, mean, variance, axis=self.axis,
            offset=ops.cast(self.beta, "float32") if self.center else None,
            scale=ops.cast(self.gamma, "float32") if self.scale else None,
            epsilon=self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def _fusable(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else (
            self.axis[0] if len(self.axis) == 1 else None)
        rank = len(inputs.shape)
        return (IS_TENSORFLOW and rank == 4 and axis in (-1, 3) and self.scale and self.center
                and not self.synchronized and not self.renorm)

    def _fused_training_call(self, inputs):
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)  # as Keras: statistics in float32 under mixed precision
        y, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32),
            mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32),
            epsilon=self.epsilon,  # the raw op, not tf.nn.fused_batch_norm, which raises it
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        shape = tf.shape(x)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        if self.unbiased_moving_variance:  # PyTorch: the kernel's unbiased variance as it is
            variance = tf.where(count > 1.0, unbiased_variance, tf.zeros_like(unbiased_variance))
        else:  # Keras: the biased variance; a single value has variance 0
            variance = tf.where(count > 1.0, unbiased_variance * ((count - 1.0) / count),
                                tf.zeros_like(unbiased_variance))
        self._update_moving_statistics(mean, variance)
        return tf.cast(y, self.compute_dtype)
