"""Ind: m students trained side by side with their own cross-entropy, no distillation.

The paper's "Ind" column (Tables 1-4): the authors' code trains the branch model with the sum of
the m cross-entropies and reports the mean accuracy over all m students (`train_one.py --ind`);
Table 4's ensemble is the mean of all m students' logits.
"""

from okddip_tf import losses
from okddip_tf.methods import base


class Independent(base.StudentsAlike):
    """m students, CE only. Deploys the last student (students are exchangeable)."""

    name = "independent"
    terms = ("peer_ce", "leader_ce")

    def loss(self, labels, outputs, *, temperature, distill_weight):
        peer_ce = losses.sum_peer_cross_entropy(labels, outputs["peer_logits"])
        leader_ce = losses.cross_entropy(labels, outputs["leader_logits"])
        return {"loss": peer_ce + leader_ce, "peer_ce": peer_ce, "leader_ce": leader_ce}
