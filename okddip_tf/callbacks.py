"""Callbacks: the distillation weight's ramp-up, diversity/attention logging, a NaN guard
(defined in okddip_tf.fit_checks)."""

import math

import keras
import numpy as np

from okddip_tf import losses


def rampup_weight(epoch, length=80, max_weight=1.0):
    """w(e) = max_weight * exp(-5 * (1 - min(e, L) / L)^2), Laine & Aila (arXiv 1610.02242).

    The authors' OKDDip code evaluates it once per 0-indexed epoch with L = 80 epochs, so
    w(0) = 0.0067 and w(e >= 80) = 1. A fractional `epoch` gives the per-step variant.

    Args:
      epoch: the 0-indexed epoch (float for per-step ramp-up).
      length: L, the ramp-up length in epochs; 0 means no ramp-up (always max_weight).
      max_weight: the weight after the ramp-up (the code's `alpha`, 1).
    """
    if length < 0:
        raise ValueError(f"The ramp-up length must be >= 0 epochs, got {length}.")
    if length == 0:
        return float(max_weight)
    progress = min(max(float(epoch), 0.0), float(length)) / length
    return float(max_weight * math.exp(-5.0 * (1.0 - progress) ** 2))


def distill_weight_of(model):
    weight = getattr(model, "distill_weight", None)
    if weight is None:
        raise ValueError(
            "DistillWeightRampup needs a model with a `distill_weight` variable: a GroupModel "
            "whose method distils (e.g. 'okddip'). Remove the callback for 'baseline' and "
            "'independent'."
        )
    return weight


class DistillWeightRampup(keras.callbacks.Callback):
    """Sets `model.distill_weight` to w(e) = max_weight * exp(-5 (1 - e/L)^2) during training.

    Per epoch by default (the authors' code: constant within an epoch, 0-indexed); with
    `per_step=True` e advances by 1/steps_per_epoch each step (the paper's "iteration-dependent").
    The assignment goes through `self.model` every time, so it reaches compiled steps on every
    backend.

    Args:
      length: L, the ramp-up length in epochs (the code uses 80).
      max_weight: the weight after the ramp-up (the code's alpha, 1).
      per_step: update every training step instead of every epoch.
    """

    sets_distill_weight = True  # GroupModel.fit then does not warn about a missing ramp-up

    def __init__(self, length=80, max_weight=1.0, per_step=False):
        super().__init__()
        self.length, self.max_weight, self.per_step = length, max_weight, per_step
        self.epoch = 0

    def on_train_begin(self, logs=None):
        distill_weight_of(self.model)
        if self.per_step and not self.params.get("steps"):
            raise ValueError(
                "A per-step ramp-up needs the number of steps per epoch: pass steps_per_epoch to "
                "fit() or use a dataset of known length."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if not self.per_step:
            self.set_weight(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            self.set_weight(self.epoch + batch / self.params["steps"])

    def set_weight(self, epoch):
        distill_weight_of(self.model).assign(rampup_weight(epoch, self.length, self.max_weight))


# The NaN guard lives below the group model, whose fit adds one; re-exported here.
from okddip_tf.fit_checks import NaNGuard, non_finite_losses  # noqa: E402,F401


class DiversityLogger(keras.callbacks.Callback):
    """Logs peer diversity and the peer attention to TensorBoard after every epoch.

    On a fixed batch of probe images it writes the mean pairwise diversity and each pair's, and
    the attention's mean self-weight, row entropy and mean weight of every peer on every peer
    (`attention/peer_a_to_peer_b`: peer a's weight on peer b). Steps are the epochs numbered from
    1, as Keras prints them.

    Args:
      images: probe images [N, H, W, 3] (raw pixels), e.g. the first 512 test images.
      log_dir: the TensorBoard directory; summaries go to `<log_dir>/okddip`.
      batch_size: the inference batch size.
    """

    def __init__(self, images, log_dir, batch_size=256):
        super().__init__()
        self.images, self.log_dir, self.batch_size = images, log_dir, batch_size
        self.writer = None

    def probe(self):
        """Runs the group on the probe images: (peer_logits [N, P, C], attention [N, P, P] or None)."""
        peer_logits, attention = [], []
        for start in range(0, len(self.images), self.batch_size):
            outputs = self.model(self.images[start:start + self.batch_size], training=False)
            peer_logits.append(keras.ops.convert_to_numpy(outputs["peer_logits"]))
            if "attention" in outputs:
                attention.append(keras.ops.convert_to_numpy(outputs["attention"]))
        return np.concatenate(peer_logits), (np.concatenate(attention) if attention else None)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if getattr(self.model, "num_peers", 0) < 2:
            return
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(f"{self.log_dir}/okddip")
        peer_logits, attention = self.probe()
        with self.writer.as_default(step=epoch + 1):
            self.write_diversity(tf, peer_logits)
            if attention is not None:
                self.write_attention(tf, attention.mean(axis=0))
        self.writer.flush()

    @staticmethod
    def write_diversity(tf, peer_logits):
        tf.summary.scalar("diversity/mean", float(np.mean(losses.pairwise_diversity(peer_logits))))
        num_peers = peer_logits.shape[1]
        for j in range(num_peers):
            for k in range(j + 1, num_peers):
                pair = keras.ops.convert_to_numpy(
                    losses.pairwise_diversity(peer_logits[:, [j, k]]))
                tf.summary.scalar(f"diversity/peer_{j}_vs_peer_{k}", float(pair.mean()))

    @staticmethod
    def write_attention(tf, mean_attention):
        """mean_attention: [P, P], row a = peer a's weights over the peers."""
        tf.summary.scalar("attention/self_weight", float(np.mean(np.diag(mean_attention))))
        entropy = -np.sum(mean_attention * np.log(mean_attention + 1e-12), axis=-1).mean()
        tf.summary.scalar("attention/row_entropy", float(entropy))
        for a, row in enumerate(mean_attention):
            for b, weight in enumerate(row):
                tf.summary.scalar(f"attention/peer_{a}_to_peer_{b}", float(weight))
