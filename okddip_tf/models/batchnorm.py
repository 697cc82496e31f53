"""Keras' BatchNormalization with TensorFlow's fused kernel for training steps (speed only).

Keras 3 normalises a training batch with separate ops (mean, squared difference, mean, then a
multiply-add, and their gradients, about a dozen passes over the activations). On the CPU the
step of a ResNet-32 group spent about a fifth of its op time there. TensorFlow's FusedBatchNormV3
computes the same batch statistics and output in one kernel (oneDNN's where oneDNN is on) and has
a fused gradient.

The maths is Keras' (and PyTorch's): y = gamma * (x - mean) / sqrt(var + eps) + beta with the
biased batch variance, and moving averages `m <- momentum * m + (1 - momentum) * batch stat` of the
batch mean and the *biased* batch variance (the fused kernel returns the unbiased one; it is
scaled back by (n - 1) / n). Results match the unfused path up to float rounding
(tests/test_batchnorm.py). Everything else (inference, other backends, synchronised BN, renorm,
masks, other ranks or axes) runs Keras' own code unchanged.

The class is named `BatchNormalization` on purpose: Keras names a layer's weights in a `.keras`
file after its class, so checkpoints written with `keras.layers.BatchNormalization` load into it
and back.
"""

import keras

IS_TENSORFLOW = keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="okddip_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose TensorFlow training step uses one fused kernel."""

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and mask is None and self._fusable(inputs):
            return self._fused_training_call(inputs)
        return super().call(inputs, training=training, mask=mask)

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
        variance = tf.where(count > 1.0, unbiased_variance * ((count - 1.0) / count),
                            tf.zeros_like(unbiased_variance))  # a single value has variance 0
        momentum = self.momentum
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        self.moving_mean.assign(
            tf.cast(moving_mean * momentum + mean * (1.0 - momentum), self.moving_mean.dtype))
        self.moving_variance.assign(tf.cast(
            moving_variance * momentum + variance * (1.0 - momentum), self.moving_variance.dtype))
        return tf.cast(y, self.compute_dtype)
