"""Label checks for Keras' default (backend-agnostic) train and test steps, e.g. on JAX.

On TensorFlow the group model runs its own steps, which assert that labels lie in
[0, num_classes) and stop with an error. Inside a jitted JAX step a host-side check cannot raise,
and an out-of-range label is silently dropped from the cross-entropy (its one-hot row is zeros).
So here the shape is checked while tracing, and a batch with an out-of-range label turns the
*logged* loss into NaN: the progress bar shows it and `okddip_tf.NaNGuard` stops training.
The gradient is left alone, so the weights stay finite.
"""

from keras import ops


def check_labels(labels):
    """Integer class ids of shape [batch] (a trailing axis of 1 is squeezed), as int32."""
    if labels is None:
        raise ValueError("Training and evaluation need (images, labels) batches; got images only.")
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    if len(labels.shape) != 1:
        raise ValueError(
            f"Labels must be integer class ids of shape [batch], got shape {labels.shape}. "
            "For one-hot labels pass argmax(labels, axis=-1)."
        )
    return ops.cast(labels, "int32")


def nan_unless_in_range(value, labels, num_classes):
    """`value` if every label lies in [0, num_classes), else NaN (for logging only)."""
    valid = ops.logical_and(ops.min(labels) >= 0, ops.max(labels) < num_classes)
    return ops.where(valid, value, ops.cast(float("nan"), value.dtype))


def log_terms(terms, labels, num_classes):
    """The loss terms to log: the total is NaN for a batch with an out-of-range label."""
    return {**terms, "loss": nan_unless_in_range(terms["loss"], labels, num_classes)}
