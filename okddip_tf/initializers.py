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


def linear_initializers(fan_in, std=None):
    """(kernel, bias) initializers of a linear layer: PyTorch's default, or N(0, std) and zeros.

    `std=None` gives PyTorch's nn.Linear default (both U(+-1/sqrt(fan_in))); a float gives the
    explicit `nn.init.normal_(weight, 0, std)` and zero bias some of the authors' models apply
    (their VGG-16: std 0.01). New instances on every call, as `torch_linear_initializer`.
    """
    if std is None:
        return torch_linear_initializer(fan_in), torch_linear_initializer(fan_in)
    return keras.initializers.RandomNormal(0.0, std), keras.initializers.Zeros()
