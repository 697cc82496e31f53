"""OKDDip (Chen et al., AAAI 2020): two-level distillation with attention-based peer targets.

Auxiliary peers distil from their own attention-weighted mix of the peers' predictions (first
level); the group leader distils from the peers' ensemble (second level). Only the leader is
deployed. Defaults follow the authors' code where it departs from the paper (`decisions.md`):
targets mix logits, gradients flow through the targets, no 1/sqrt(d) scaling.

The ablations of Table 5 are options of this method:

* `attention="random"` ("w/o SA (random)"): a random row-normalised matrix, new every batch;
* `attention="self"` ("w/o SA (entropy)"): every peer attends only to itself. The paper says it
  "completely remove[s] L_dis1 ... and let[s] the peers only learn from L_gt with an entropy
  term, i.e., each peer attends only to itself". We read the entropy term as the self-target's
  KL: with alpha = I the first-level target of peer a is its own softened prediction, so the
  first-level term is KL(p_a || p_a) = 0 and contributes no gradient; we add no other entropy
  regulariser (the paper defines none, and the authors' unused `E_Loss` helper is broken);
* `attention="mean"` ("w/o SA (mean)"): uniform weights 1/P;
* `attention="identity"` ("w/o SA (asymmetry)"): W_L = W_E = I, no learned projections;
* `two_level=False` ("w/o two-level"): no leader; all m students are peers with attention over
  all of them, and the reported number is one student's, drawn from `train.seed`
  (`reported_student`). Its ensemble (the mean of all m peers' logits) is the authors' `en` mode,
  the setting of Table 4.
"""

import numpy as np
from keras import ops

from okddip_tf import losses
from okddip_tf.errors import ConfigError
from okddip_tf.methods.attention import PeerAttention, RandomAttention
from okddip_tf.methods import base

ATTENTIONS = ("learned", "random", "self", "mean", "identity")


class OKDDip(base.Method):
    """OKDDip, with its attention and two-level ablations (see the module's docstring).

    Options (`config.okddip.*`):
      attention: "learned" (the method) or an ablation: random, self, mean, identity.
      attention_dim: projection size of W_L and W_E; None means feature_dim // 8 (the code).
      attention_scale: divide attention energies by sqrt(dim) (the code does not).
      detach_targets: stop gradients through both targets (the code does not; the learned
        attention then gets no gradient).
      target_space: mix peer "logits" (code) or "probabilities" (paper Eq. 5).
      two_level: False removes the leader (Table 5's "w/o two-level").
      reported_student: with two_level=False, the student reported and deployed; -1 draws it
        from `train.seed` (`okddip train`) or from 0 (Python API).
    """

    name = "okddip"
    ensemble = "ensemble_accuracy"

    def check_options(self):
        options = self.options
        if options["attention"] not in ATTENTIONS:
            raise ConfigError(f"okddip.attention must be one of {ATTENTIONS}, got "
                              f"{options['attention']!r}.")
        losses.check_target_space(options["target_space"])
        if options["attention_dim"] is not None and options["attention_dim"] < 1:
            raise ConfigError(f"okddip.attention_dim must be >= 1 (or None for feature_dim // 8), "
                              f"got {options['attention_dim']}.")

    @property
    def two_level(self):
        return bool(self.options["two_level"])

    @property
    def terms(self):
        if self.two_level:
            return ("peer_ce", "leader_ce", "peer_kd", "leader_kd")
        return ("peer_ce", "peer_kd")

    @property
    def deployed(self):
        return "the leader" if self.two_level else "the reported student (okddip.reported_student)"

    def num_peers(self, num_students):
        return num_students - 1 if self.two_level else num_students

    def deployed_index(self, num_students):
        if self.two_level:
            return num_students - 1
        chosen = self.options["reported_student"]
        if chosen < 0:
            chosen = draw_student(0, num_students)
        if chosen >= num_students:
            raise ConfigError(f"okddip.reported_student={chosen} is not one of the "
                              f"{num_students} students.")
        return chosen

    def check_group(self, num_students, sharing):
        super().check_group(num_students, sharing)
        if not self.two_level and num_students < 2:
            raise ConfigError("okddip.two_level=False needs num_students >= 2 peers.")
        self.deployed_index(num_students)

    def build_layers(self, context):
        kind = self.options["attention"]
        if kind in ("self", "mean"):
            return {}
        if kind == "random":
            layer = RandomAttention(name="attention", dtype="float32")
        else:
            dim = self.options["attention_dim"] or max(1, context.backbone.feature_dim // 8)
            # The authors' branch-based VGG draws W_L and W_E from N(0, 0.01); their ResNets,
            # DenseNets and network-based groups keep PyTorch's default (Backbone.linear_init_std).
            init_std = context.backbone.linear_init_std if context.sharing == "branch" else None
            layer = PeerAttention(dim, self.options["attention_scale"],
                                  projections=kind == "learned", init_std=init_std,
                                  name="attention", dtype="float32")
        layer.build((None, context.num_peers, context.backbone.feature_dim))
        self.attention_layer = layer
        return {"attention": layer}

    @property
    def attention_dim(self):
        layer = getattr(self, "attention_layer", None)
        return layer.dim if isinstance(layer, PeerAttention) else None

    def outputs(self, students, training):
        num_peers = len(students.logits) if not self.two_level else len(students.logits) - 1
        peer_logits = ops.stack(students.logits[:num_peers], axis=1)  # [B, P, C]
        attention = self.attention(ops.stack(students.features[:num_peers], axis=1))
        return {"attention": attention,
                "peer_targets": losses.mix_peer_logits(attention, peer_logits)}

    def attention(self, features):
        """[B, P, P] weights from the peers' features [B, P, D]."""
        kind = self.options["attention"]
        if kind in ("learned", "identity", "random"):
            return self.attention_layer(features)
        batch, num_peers = ops.shape(features)[0], features.shape[1]
        if kind == "self":
            weights = ops.eye(num_peers, dtype="float32")
        else:  # mean
            weights = ops.full((num_peers, num_peers), 1.0 / num_peers, dtype="float32")
        return ops.broadcast_to(weights[None], (batch, num_peers, num_peers))

    def loss(self, labels, outputs, *, temperature, distill_weight):
        options = self.options
        if self.two_level:
            return losses.okddip_loss(
                labels, outputs, temperature=temperature, distill_weight=distill_weight,
                detach_targets=options["detach_targets"], target_space=options["target_space"])
        peer_ce = losses.sum_peer_cross_entropy(labels, outputs["peer_logits"])
        peer_kd = losses.first_level_kd(outputs, temperature, options["target_space"],
                                        options["detach_targets"])
        weight = ops.cast(distill_weight, peer_ce.dtype)
        return {"loss": peer_ce + weight * peer_kd, "peer_ce": peer_ce, "peer_kd": peer_kd}

    def prepare_run(self, seed, num_students):
        """Without a leader, draws the reported student from the run's seed (when not set)."""
        if not self.two_level and self.options["reported_student"] < 0:
            self.options["reported_student"] = draw_student(seed, num_students)


def draw_student(seed, num_students):
    """The student a leaderless group reports: a uniform draw fixed by the seed."""
    return int(np.random.default_rng(seed).integers(num_students))
