"""Baseline: one network trained with cross-entropy only (the paper's "Baseline" column)."""

from okddip_tf import losses
from okddip_tf.methods import base


class Baseline(base.Method):
    """A single student, CE only. The deployed network is that student."""

    name = "baseline"
    terms = ("leader_ce",)
    deployed = "the only student"

    def loss(self, labels, outputs, *, temperature, distill_weight):
        leader_ce = losses.cross_entropy(labels, outputs["leader_logits"])
        return {"loss": leader_ce, "leader_ce": leader_ce}
