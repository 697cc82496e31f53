"""What `GroupModel.fit` and `evaluate` check around Keras' loops (issue 25).

* A NaN guard: unless the callbacks hold a `NaNGuard`, `fit` puts one first that stops at the
  first step whose loss is not finite and puts back the last weights whose loss was finite.
* `NaNGuard` itself lives here (re-exported by okddip_tf.callbacks), below the group model.
* The ramp-up: a distilling group fitted from step 0 at full distillation weight without a
  `DistillWeightRampup` gets one warning (per group) saying how to add it.
* Label values: in-memory labels (NumPy arrays, lists, tensors) are checked against
  [0, num_classes) before training; for a tf.data dataset, the graph assertion that fails at the
  first batch holding a bad label is turned into an `InputError` naming the bad values.
"""

import contextlib
import math
import warnings

import keras
import numpy as np

from okddip_tf.errors import InputError

LABEL_ASSERTION = "Labels must lie in"


def fit_callbacks(group, callbacks):
    """The callbacks `fit` runs: the user's, with a last-good-keeping NaNGuard first unless they
    hold a NaNGuard; warns once per group when the ramp-up is missing (see module docstring)."""
    if isinstance(callbacks, keras.callbacks.CallbackList):  # the user's own list: left alone
        return callbacks
    callbacks = list(callbacks or [])
    warn_without_rampup(group, callbacks)
    if not any(isinstance(c, NaNGuard) for c in callbacks):
        callbacks.insert(0, NaNGuard(keep_last_good=True))
    return callbacks


def warn_without_rampup(group, callbacks):
    weight = getattr(group, "distill_weight", None)
    if weight is None or getattr(group, "_warned_no_rampup", False):
        return
    if any(getattr(c, "sets_distill_weight", False) for c in callbacks):
        return  # DistillWeightRampup, or a callback of the user's that says it sets the weight
    optimizer = getattr(group, "optimizer", None)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else 0
    value = float(keras.ops.convert_to_numpy(weight))
    if step != 0 or value < 1.0:
        return  # a fit that continues, or a weight the user set
    object.__setattr__(group, "_warned_no_rampup", True)
    warnings.warn(
        f"GroupModel.fit: the {group.method_name!r} method distils at full weight "
        f"(distill_weight = {value:g}) from the first step: no okddip_tf.DistillWeightRampup is "
        "among the callbacks. The paper ramps the weight up, w(e) = exp(-5 (1 - e/80)^2), and "
        "without it a group can diverge in its first steps. Pass "
        "callbacks=[okddip_tf.DistillWeightRampup(length=80)]; to distil at full weight from "
        "the start on purpose, ignore this warning (given once per group).",
        UserWarning, stacklevel=4)  # the caller of GroupModel.fit


def loss_names(model):
    """The logged loss terms: `loss` and, for a GroupModel, its method's terms."""
    method = getattr(model, "method", None)
    return ("loss",) + tuple(getattr(method, "terms", ()))


def non_finite_losses(logs, names=None):
    """{name: value} of the losses in `logs` that are NaN or infinite: the keys in `names` (and
    their `val_` versions), or without `names` the keys ending in "loss"."""
    def is_loss(key):
        if names is None:
            return key.endswith("loss")
        return key in names or (key.startswith("val_") and key[4:] in names)

    return {key: float(value) for key, value in (logs or {}).items()
            if is_loss(key) and not math.isfinite(float(value))}


class NaNGuard(keras.callbacks.Callback):
    """Stops training with a clear error as soon as a loss is NaN or infinite.

    It checks the training loss after every step, and the epoch's losses (validation included:
    the last step's update can break the weights) at the end of every epoch. The error names the
    epoch and the step (from 1, as Keras' progress numbers them) and each loss term that is not
    finite. Put it before the checkpointing
    callbacks: it then raises before they could save a broken model. `GroupModel.fit` adds one
    (with `keep_last_good=True`) unless its callbacks hold one. Import it from `okddip_tf` or
    `okddip_tf.callbacks`.

    Args:
      keep_last_good: copy the weights before every step and, when a loss is not finite, put
        back the last ones whose training loss was finite (one `get_weights()` per step; the
        optimizer's state is not put back).
    """

    epoch = 0

    def __init__(self, keep_last_good=False):
        super().__init__()
        self.keep_last_good = keep_last_good
        self.before_step = self.last_good = None

    def on_train_begin(self, logs=None):
        self.before_step = self.last_good = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.keep_last_good:
            self.before_step = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(float(loss)):
            self.last_good = self.before_step
            return
        terms = non_finite_losses(logs, loss_names(self.model))
        raise FloatingPointError(self.explain(
            f"The training loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1} "
            f"(not finite: {describe(terms)})"))

    def on_epoch_end(self, epoch, logs=None):
        bad = non_finite_losses(logs)
        if bad:
            raise FloatingPointError(self.explain(f"At the end of epoch {epoch + 1}, {describe(bad)}"))

    def explain(self, what):
        optimizer = getattr(self.model, "optimizer", None)
        where = ""
        if optimizer is not None:
            learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            updates = int(keras.ops.convert_to_numpy(optimizer.iterations))
            where = f" (after {updates} optimizer updates; learning rate {learning_rate:g})"
        return (
            f"{what}{where}. Likely causes: a learning rate too high for the batch size, images "
            "that are not raw [0, 255] pixels (or hold NaN), or float16 overflow (use "
            "mixed_bfloat16 or float32). What usually helps a group: the distillation weight's "
            "ramp-up (callbacks=[okddip_tf.DistillWeightRampup(length=80)]), a lower learning "
            "rate, and for your own model in a branch group, whose shared trunk gets the sum of "
            "the m branches' gradients, scaling the trunk's gradient by 1/m as CL-ILR does "
            f"(okddip_tf.methods.cl_ilr.rescale_gradient). {self.restore()}"
        )

    def restore(self):
        """Puts back the last good weights (keep_last_good); says what the model now holds."""
        if not self.keep_last_good:
            return "Saved checkpoints from earlier epochs are kept."
        if self.last_good is None:
            return "No step of this fit had a finite loss: the weights are left as they are."
        self.model.set_weights(self.last_good)
        return ("The model holds the last weights whose training loss was finite (the "
                "optimizer's state is not restored: compile again before training on).")


def describe(values):
    return ", ".join(f"{key} = {value}" for key, value in sorted(values.items()))


def check_label_values(labels, num_classes):
    """Raises InputError if in-memory integer labels hold values outside [0, num_classes).

    Datasets, generators and anything else that is not array-like pass unchecked (their batches
    are asserted in the training step, see `clear_label_errors`).
    """
    if labels is None or not (isinstance(labels, (np.ndarray, list, tuple))
                              or keras.ops.is_tensor(labels)):
        return
    try:
        values = np.asarray(keras.ops.convert_to_numpy(labels)
                            if keras.ops.is_tensor(labels) else labels)
    except (TypeError, ValueError):
        return
    if values.ndim == 2 and values.shape[-1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        return  # the step's shape check says what is wrong
    outside = (values < 0) | (values >= num_classes)
    if not outside.any():
        return
    bad = np.unique(values[outside])
    shown = ", ".join(f"{v:g}" for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
    raise InputError(
        f"Labels must lie in [0, {num_classes}) (num_classes={num_classes}): "
        f"{int(outside.sum())} of {len(values)} labels do not, with values {shown} (the first "
        f"at index {int(np.argmax(outside))}). Check the labels against num_classes.")


def check_fit_labels(group, y, validation_data):
    check_label_values(y, group.num_classes)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
        check_label_values(validation_data[1], group.num_classes)


def label_error_text(message):
    """The label assertion's own text out of a graph-execution error, or None if it is another."""
    if LABEL_ASSERTION not in message or "assertion failed: [" not in message:
        return None
    failed = message.split("assertion failed: [", 1)[1].split("\n", 1)[0]
    parts = failed.rstrip().rstrip("]").split("] [")
    text = parts[0].replace("\\'", "'")
    if len(parts) >= 3:
        text += f" {parts[1]} {' '.join(parts[2:]).replace(' ', ', ')} (values as the step " \
                "received them, after any squeeze and cast to int32)."
    return text


@contextlib.contextmanager
def clear_label_errors():
    """Turns the training or test step's failed label assertion into an InputError."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = label_error_text(str(error))
        if text is None:
            raise
        raise InputError(text) from None
