"""Initializers shared by the backbones and the methods' layers."""

import math

import keras


def torch_linear_initializer(fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for nn.Linear weights and biases.

    Returns a new instance on every call; use one per weight (Keras 3 unseeded initializers
    return identical values each time the same instance is called).
    """
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)
