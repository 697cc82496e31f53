"""The OKDDip loss and its building blocks, as pure functions of `keras.ops`.

Everything here is backend-agnostic and stateless, so the tests check each term against a NumPy
re-derivation. Shapes use B = batch, P = number of auxiliary peers (m - 1), C = classes.

Reference: Chen et al., "Online Knowledge Distillation with Diverse Peers", AAAI 2020, Eq. (5)-(8),
as the authors' code implements them (see `okddip_spec.md` §4 and `decisions.md`).
"""

from keras import ops

from okddip_tf.errors import ConfigError

# The authors' KL adds this to the target probabilities before taking their log (utils.KL_Loss).
TARGET_EPSILON = 1e-7

TARGET_SPACES = ("logits", "probabilities")


def cross_entropy(labels, logits):
    """Mean softmax cross-entropy at temperature 1. labels: [B] ints, logits: [B, C]."""
    per_example = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.mean(per_example)


def distillation_kl(target_probs, student_logits, temperature):
    """Temperature-scaled KL(target || student), as in the authors' `KL_Loss`.

    kl = T^2 * (1/B) * sum_{i,c} p_ic * (log p_ic - log_softmax(s_i / T)_c), with p = target + 1e-7.

    Args:
      target_probs: [B, C] target distribution (already softened at T).
      student_logits: [B, C] raw student logits.
      temperature: the softening temperature T.

    Returns:
      A scalar: the batch mean of the per-example KL, times T^2.
    """
    target = target_probs + TARGET_EPSILON
    student_log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    per_example = ops.sum(target * (ops.log(target) - student_log_probs), axis=-1)
    return temperature * temperature * ops.mean(per_example)


def mix_peer_logits(attention, peer_logits):
    """First-level targets in logit space: x_a = sum_b alpha_ab z_b (code and Figure 1).

    Args:
      attention: [B, P, P] rows summing to 1.
      peer_logits: [B, P, C].

    Returns:
      [B, P, C] attention-mixed logits, one row per peer.
    """
    return ops.einsum("bij,bjc->bic", attention, peer_logits)


def peer_target_probs(outputs, temperature, target_space="logits"):
    """Soft targets of the auxiliary peers, [B, P, C].

    "logits" (default, the authors' code): softmax(sum_b alpha_ab z_b / T).
    "probabilities" (the paper's Eq. 5): sum_b alpha_ab softmax(z_b / T).
    """
    if target_space == "logits":
        return ops.softmax(outputs["peer_targets"] / temperature, axis=-1)
    peer_probs = ops.softmax(outputs["peer_logits"] / temperature, axis=-1)
    return ops.einsum("bij,bjc->bic", outputs["attention"], peer_probs)


def leader_target_probs(peer_logits, temperature, target_space="logits"):
    """Second-level target of the leader, [B, C]: the peers' ensemble softened at T.

    "logits" (default, code): softmax(mean_a z_a / T). "probabilities": mean_a softmax(z_a / T).
    """
    if target_space == "logits":
        return ops.softmax(ops.mean(peer_logits, axis=1) / temperature, axis=-1)
    return ops.mean(ops.softmax(peer_logits / temperature, axis=-1), axis=1)


def sum_peer_cross_entropy(labels, peer_logits):
    """Sum over peers of the batch-mean cross-entropy. peer_logits: [B, P, C]."""
    num_peers = peer_logits.shape[1]
    return sum(cross_entropy(labels, peer_logits[:, a]) for a in range(num_peers))


def first_level_kd(outputs, temperature, target_space="logits", detach_targets=False):
    """Sum over peers of KL_T(t_a || z_a), t_a the attention-mixed target of peer a."""
    peer_logits = outputs["peer_logits"]
    targets = peer_target_probs(outputs, temperature, target_space)  # [B, P, C]
    if detach_targets:
        targets = ops.stop_gradient(targets)
    return sum(distillation_kl(targets[:, a], peer_logits[:, a], temperature)
               for a in range(peer_logits.shape[1]))


def second_level_kd(outputs, temperature, target_space="logits", detach_targets=False):
    """KL_T(t_m || z_m): the leader distils from the peers' ensemble t_m."""
    target = leader_target_probs(outputs["peer_logits"], temperature, target_space)  # [B, C]
    if detach_targets:
        target = ops.stop_gradient(target)
    return distillation_kl(target, outputs["leader_logits"], temperature)


def okddip_loss(
    labels,
    outputs,
    *,
    temperature=3.0,
    distill_weight=1.0,
    detach_targets=False,
    target_space="logits",
):
    """The two-level OKDDip loss (Eq. 8).

    loss = sum_a CE(z_a) + CE(z_m)
           + distill_weight * (sum_a KL_T(t_a || z_a) + KL_T(t_m || z_m))

    with t_a the attention-mixed first-level target of peer a and t_m the peers' ensemble.

    Args:
      labels: [B] integer class ids.
      outputs: the group model's output dict: `peer_logits` [B, P, C], `leader_logits` [B, C],
        `peer_targets` [B, P, C] (mixed logits) and `attention` [B, P, P].
      temperature: T of both distillation levels.
      distill_weight: the ramp-up weight w(e) multiplying both KL terms (scalar or variable).
      detach_targets: stop the gradient through both targets. The authors' code does not; with
        detached targets the attention projections receive no gradient at all.
      target_space: "logits" (code) or "probabilities" (paper Eq. 5); see `peer_target_probs`.

    Returns:
      A dict of scalars: `loss` (total), `peer_ce`, `leader_ce`, `peer_kd`, `leader_kd`; the KD
      terms include T^2 but not the distillation weight.
    """
    check_target_space(target_space)
    peer_kd = first_level_kd(outputs, temperature, target_space, detach_targets)
    leader_kd = second_level_kd(outputs, temperature, target_space, detach_targets)
    peer_ce = sum_peer_cross_entropy(labels, outputs["peer_logits"])
    leader_ce = cross_entropy(labels, outputs["leader_logits"])
    weight = ops.cast(distill_weight, peer_ce.dtype)
    return {
        "loss": peer_ce + leader_ce + weight * (peer_kd + leader_kd),
        "peer_ce": peer_ce,
        "leader_ce": leader_ce,
        "peer_kd": peer_kd,
        "leader_kd": leader_kd,
    }


def check_target_space(target_space):
    if target_space not in TARGET_SPACES:
        raise ConfigError(f"target_space must be one of {TARGET_SPACES}, got {target_space!r}.")


def leave_one_out_kd(student_logits, temperature):
    """Sum over students i of KL_T(softmax(mean_{j != i} z_j / T) || z_i), targets not detached.

    The target of DML (the authors' default) and CL-ILR: each student distils from the mean of
    the *other* students' logits. student_logits: [B, S, C] with S >= 2.
    """
    num = student_logits.shape[1]
    total = ops.sum(student_logits, axis=1)  # [B, C]
    return sum(
        distillation_kl(ops.softmax((total - student_logits[:, i]) / ((num - 1) * temperature),
                                    axis=-1), student_logits[:, i], temperature)
        for i in range(num))


def pairwise_diversity(peer_logits):
    """Per-example peer diversity, [B]: the mean over peer pairs j < k of ||p_j - p_k||_2.

    p are the T=1 softmax outputs. As in the authors' code (nn.PairwiseDistance) 1e-6 is added to
    the difference; unlike it, the sum is divided by the true number of pairs, not a fixed 3.
    """
    probs = ops.softmax(peer_logits, axis=-1)  # [B, P, C]
    num_peers = peer_logits.shape[1]
    pairs = [(j, k) for j in range(num_peers) for k in range(j + 1, num_peers)]
    if not pairs:
        raise ValueError("Peer diversity needs at least 2 auxiliary peers (num_students >= 3).")
    distances = [
        ops.sqrt(ops.sum(ops.square(probs[:, j] - probs[:, k] + 1e-6), axis=-1)) for j, k in pairs
    ]
    return ops.mean(ops.stack(distances, axis=1), axis=1)
