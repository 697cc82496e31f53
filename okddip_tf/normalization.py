"""The models' first layer: raw pixels in [0, 255] (uint8 or float) -> normalised float."""

import keras
from keras import layers, ops

from okddip_tf.inputs import image_spec

CIFAR100_MEAN = (129.3105, 124.0575, 112.4295)  # (0.5071, 0.4865, 0.4409) * 255
CIFAR100_STD = (68.1615, 65.382, 70.431)  # (0.2673, 0.2564, 0.2762) * 255


@keras.saving.register_keras_serializable(package="okddip_tf")
class PixelNormalization(layers.Layer):
    """(x - mean) / std per channel, with mean and std in pixel units; checks the image shape.

    Args:
      mean, std: per-channel statistics in [0, 255] units.
    """

    def __init__(self, mean=CIFAR100_MEAN, std=CIFAR100_STD, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean and std need one positive std per channel; got {mean}, {std}.")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def build(self, input_shape):
        check_image_shape(input_shape, len(self.mean))

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def check_image_shape(shape, channels=3):
    """Raises a ValueError unless `shape` is [batch, height, width, channels]."""
    image_spec(channels=channels).check(shape)
