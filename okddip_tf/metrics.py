"""What the group logs each step: loss terms, accuracies, ensemble and diversity trackers."""

import keras
from keras import ops

from okddip_tf.losses import pairwise_diversity
from okddip_tf.methods.base import student_logits


class GroupTrackers:
    """The group model's metric objects, built once from the method and group size.

    Keys (an API: tests and callbacks rely on them): `loss`, each loss term, `distill_weight`
    (distilling methods), `leader_accuracy` (the deployed student); with peers `peer_accuracy`
    (mean over peers), `ensemble_accuracy` (argmax of the peers' mean logits, leader excluded),
    `ensemble_prob_accuracy` (argmax of the peers' mean probabilities) and `peer_{i}_accuracy`;
    with two or more peers `diversity` (see `losses.pairwise_diversity`). With two or more
    students, `student_accuracy` (mean over every student, the leader included),
    `student_ensemble_accuracy` (argmax of every student's mean logits) and `student_diversity`
    (`diversity` over every student): the numbers the paper reports for DML, CL-ILR, ONE and Ind
    (its Figure 2 measures `diversity`, over the peers).

    Args:
      terms: the method's loss terms besides `loss`.
      num_peers: P, the auxiliary peers.
      distills: whether the method logs its `distill_weight`.
      has_leader: whether the leader is a student besides the peers (False: it is one of them).
    """

    def __init__(self, terms, num_peers, distills, has_leader=True):
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        self.losses = [mean(name="loss")] + [mean(name=term) for term in terms]
        self.weight = mean(name="distill_weight") if distills else None
        self.leader = accuracy(name="leader_accuracy")
        self.num_peers, self.has_leader = num_peers, has_leader
        self.peer_mean = mean(name="peer_accuracy") if num_peers else None
        self.ensemble = accuracy(name="ensemble_accuracy") if num_peers else None
        self.ensemble_prob = accuracy(name="ensemble_prob_accuracy") if num_peers else None
        self.diversity = mean(name="diversity") if num_peers >= 2 else None
        several = num_peers + has_leader >= 2
        self.student_mean = mean(name="student_accuracy") if several else None
        self.student_ensemble = accuracy(name="student_ensemble_accuracy") if several else None
        self.student_diversity = mean(name="student_diversity") if several else None
        self.peers = [accuracy(name=f"peer_{i}_accuracy") for i in range(num_peers)]

    def all(self):
        """Every tracker, in logging order."""
        single = [self.weight, self.leader, self.peer_mean, self.ensemble, self.ensemble_prob,
                  self.diversity, self.student_mean, self.student_ensemble,
                  self.student_diversity]
        return self.losses + [m for m in single if m is not None] + self.peers

    def update(self, labels, outputs, terms, distill_weight):
        """Updates every tracker from one batch; returns {name: result}."""
        self.update_losses(terms, distill_weight)
        return self.update_predictions(labels, outputs)

    def update_losses(self, terms, distill_weight):
        """The loss and weight trackers (Keras' default steps call this from `compute_loss`)."""
        for tracker in self.losses:
            tracker.update_state(terms[tracker.name])
        if self.weight is not None:
            self.weight.update_state(distill_weight)

    def update_predictions(self, labels, outputs):
        """The accuracy, ensemble and diversity trackers; returns {name: result} of all."""
        self.leader.update_state(labels, outputs["leader_logits"])
        if self.num_peers:
            self.update_peers(labels, outputs["peer_logits"])
        if self.student_mean is not None:
            logits = student_logits(outputs, self.has_leader)  # [B, S, C]
            self.student_mean.update_state(mean_hits(labels, logits))
            self.student_ensemble.update_state(labels, ops.mean(logits, axis=1))
            self.student_diversity.update_state(pairwise_diversity(logits))
        return {m.name: m.result() for m in self.all()}

    def update_peers(self, labels, peer_logits):
        for i, tracker in enumerate(self.peers):
            tracker.update_state(labels, peer_logits[:, i])
        self.peer_mean.update_state(mean_hits(labels, peer_logits))
        self.ensemble.update_state(labels, ops.mean(peer_logits, axis=1))
        self.ensemble_prob.update_state(labels, ops.mean(ops.softmax(peer_logits, axis=-1), axis=1))
        if self.diversity is not None:
            self.diversity.update_state(pairwise_diversity(peer_logits))


def mean_hits(labels, logits):
    """Per example, the fraction of the students [B, S, C] whose argmax is the label: [B]."""
    predictions = ops.argmax(logits, axis=-1)  # [B, S]
    hits = ops.equal(predictions, ops.cast(labels[:, None], predictions.dtype))
    return ops.mean(ops.cast(hits, "float32"), axis=1)


def check_labels(labels, num_classes):
    """Integer class ids of shape [batch] (a trailing axis of 1 is squeezed), as int32.

    On TensorFlow the group runs its own steps, and the labels are asserted to lie in
    [0, num_classes): an out-of-range label stops the step with an error. Inside a jitted JAX
    step (Keras' default steps) a host-side check cannot raise, and an out-of-range label would be
    silently dropped from the cross-entropy (its one-hot row is zeros); there the shape is checked
    while tracing and `log_terms` turns the *logged* loss of such a batch into NaN instead.
    """
    if labels is None:
        raise ValueError("Training and evaluation need (images, labels) batches; got images only.")
    labels = ops.convert_to_tensor(labels)
    if ops.ndim(labels) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    if ops.ndim(labels) != 1:
        raise ValueError(
            f"Labels must be integer class ids of shape [batch], got shape {labels.shape}. "
            "For one-hot labels pass argmax(labels, axis=-1)."
        )
    labels = ops.cast(labels, "int32")
    if keras.backend.backend() != "tensorflow":
        return labels
    import tensorflow as tf

    message = (
        f"Labels must lie in [0, {num_classes}). Check the dataset's labels against "
        "num_classes (--config.model.num_classes is read from the dataset by `okddip train`)."
    )
    # One assertion whose error shows the offending values (okddip_tf.fit_checks reads it).
    outside = tf.logical_or(labels < 0, labels >= num_classes)
    with tf.control_dependencies([tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(outside)),
            [message, "Out-of-range labels in this batch:", tf.boolean_mask(labels, outside)],
            summarize=10, name="labels_in_range")]):
        return tf.identity(labels)


def nan_unless_in_range(value, labels, num_classes):
    """`value` if every label lies in [0, num_classes), else NaN (for logging only)."""
    valid = ops.logical_and(ops.min(labels) >= 0, ops.max(labels) < num_classes)
    return ops.where(valid, value, ops.cast(float("nan"), value.dtype))


def log_terms(terms, labels, num_classes):
    """The loss terms to log. On TensorFlow `check_labels` asserted the range: `terms` as they
    are. On other backends the total is NaN for a batch with an out-of-range label, so the
    progress bar shows it and `okddip_tf.NaNGuard` stops training; the gradient is left alone,
    so the weights stay finite."""
    if keras.backend.backend() == "tensorflow":
        return terms
    return {**terms, "loss": nan_unless_in_range(terms["loss"], labels, num_classes)}
