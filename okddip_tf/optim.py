"""The paper's optimiser: SGD with Nesterov momentum and coupled L2 weight decay, as PyTorch does it.

Keras' `SGD(weight_decay=...)` decays the weights after the update (decoupled), and its velocity
stores `-lr * gradient`, which carries the old learning rate past a drop. PyTorch, which produced
the paper's numbers, adds `wd * w` to the gradient before the momentum and keeps the momentum
buffer in gradient units:

    g <- g + wd * w;  buf <- mu * buf + g;  g <- g + mu * buf (Nesterov);  w <- w - lr * g
"""

import keras
from keras import ops

from okddip_tf import compat


@keras.saving.register_keras_serializable(package="okddip_tf")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with PyTorch semantics: coupled L2 weight decay and a gradient-unit momentum buffer.

    Args:
      learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
      momentum: mu.
      nesterov: use Nesterov momentum.
      l2: the coupled weight decay (PyTorch's `weight_decay`), applied to every trainable variable.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=True, l2=5e-4, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledSGD applies coupled L2 through `l2`; do not pass weight_decay.")
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        buffer = self.momentums[compat.variable_index(self, variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(buffer, momentum * buffer + gradient)
        step = gradient + momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def step_schedule(steps_per_epoch, base_learning_rate=0.1, drop_epochs=(150, 225), factor=0.1):
    """Multiplies the learning rate by `factor` at the start of each 0-indexed epoch in drop_epochs."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    values = [base_learning_rate * factor**i for i in range(len(drop_epochs) + 1)]
    if not drop_epochs:
        return base_learning_rate
    # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i], so the first step of a
    # drop epoch (index epoch * steps_per_epoch) must sit just past the boundary.
    boundaries = [epoch * steps_per_epoch - 1 for epoch in drop_epochs]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def paper_sgd(steps_per_epoch, learning_rate=0.1, drop_epochs=(150, 225), momentum=0.9,
              nesterov=True, l2=5e-4):
    """The OKDDip CIFAR recipe: SGD, Nesterov, momentum 0.9, lr 0.1 x0.1 at 150 and 225, L2 5e-4.

    Example:
    ```python
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=50_000 // 128))
    ```
    """
    schedule = step_schedule(steps_per_epoch, learning_rate, drop_epochs)
    return CoupledSGD(schedule, momentum=momentum, nesterov=nesterov, l2=l2)
