"""okddip_tf.losses against an independent NumPy re-derivation (spec §4, decisions 1, 2, 3, 6, 7, 14).

The reference functions below are written from the formulas in the spec, not from the library:
  KL_T(t || s) = T^2 * (1/B) * sum_{i,c} p_ic (log p_ic - log_softmax(s_i / T)_c), p = t + 1e-7
  CE = batch mean of -log_softmax(z)_y
  loss = sum_a CE(z_a) + CE(z_m) + w * (sum_a KL_T(t_a || z_a) + KL_T(t_m || z_m))
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import okddip_tf
from okddip_tf import losses

EPS = 1e-7
NUM_CLASSES = 7
BATCH = 5


# NumPy reference, float64 throughout.

def np_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_kl(target_probs, student_logits, temperature):
    p = np.asarray(target_probs, dtype=np.float64) + EPS
    log_q = np_log_softmax(np.asarray(student_logits) / temperature)
    per_example = np.sum(p * (np.log(p) - log_q), axis=-1)
    return temperature ** 2 * per_example.mean()


def np_ce(labels, logits):
    log_probs = np_log_softmax(logits)
    return -log_probs[np.arange(len(labels)), labels].mean()


def np_mix(attention, values):
    """out[i, a] = sum_b attention[i, a, b] * values[i, b], written as explicit loops."""
    batch, peers = attention.shape[:2]
    out = np.zeros((batch, peers) + values.shape[2:])
    for i in range(batch):
        for a in range(peers):
            for b in range(peers):
                out[i, a] += attention[i, a, b] * values[i, b]
    return out


def np_okddip(labels, peer_logits, leader_logits, attention, temperature, weight, target_space):
    num_peers = peer_logits.shape[1]
    if target_space == "logits":
        peer_targets = np_softmax(np_mix(attention, peer_logits) / temperature)
        leader_target = np_softmax(peer_logits.mean(axis=1) / temperature)
    else:
        soft = np_softmax(peer_logits / temperature)
        peer_targets = np_mix(attention, soft)
        leader_target = soft.mean(axis=1)
    peer_ce = sum(np_ce(labels, peer_logits[:, a]) for a in range(num_peers))
    leader_ce = np_ce(labels, leader_logits)
    peer_kd = sum(np_kl(peer_targets[:, a], peer_logits[:, a], temperature)
                  for a in range(num_peers))
    leader_kd = np_kl(leader_target, leader_logits, temperature)
    return {
        "loss": peer_ce + leader_ce + weight * (peer_kd + leader_kd),
        "peer_ce": peer_ce,
        "leader_ce": leader_ce,
        "peer_kd": peer_kd,
        "leader_kd": leader_kd,
    }


def np_diversity(peer_logits):
    probs = np_softmax(peer_logits)
    num_peers = probs.shape[1]
    per_pair = []
    for j in range(num_peers):
        for k in range(j + 1, num_peers):
            diff = probs[:, j] - probs[:, k] + 1e-6
            per_pair.append(np.sqrt(np.sum(diff ** 2, axis=-1)))
    return np.mean(per_pair, axis=0)


def random_case(seed, num_students, batch=BATCH, num_classes=NUM_CLASSES, scale=3.0):
    rng = np.random.default_rng(seed)
    num_peers = num_students - 1
    peer_logits = rng.normal(scale=scale, size=(batch, num_peers, num_classes))
    leader_logits = rng.normal(scale=scale, size=(batch, num_classes))
    raw = rng.uniform(0.05, 1.0, size=(batch, num_peers, num_peers))
    attention = raw / raw.sum(axis=-1, keepdims=True)
    labels = rng.integers(0, num_classes, size=batch)
    return labels, peer_logits, leader_logits, attention


def outputs_dict(peer_logits, leader_logits, attention, dtype="float64"):
    return {
        "peer_logits": tf.constant(peer_logits, dtype=dtype),
        "leader_logits": tf.constant(leader_logits, dtype=dtype),
        "attention": tf.constant(attention, dtype=dtype),
        "peer_targets": tf.constant(np.einsum("bij,bjc->bic", attention, peer_logits), dtype=dtype),
    }


def to_numpy(terms):
    return {k: float(ops.convert_to_numpy(v)) for k, v in terms.items()}


# The full loss, term by term.

@pytest.mark.parametrize("target_space", ["logits", "probabilities"])
@pytest.mark.parametrize("distill_weight", [0.3, 1.0])
@pytest.mark.parametrize("num_students", [2, 3, 4, 5])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_okddip_loss_matches_numpy(temperature, num_students, distill_weight, target_space):
    seed = int(temperature * 1000 + num_students * 10 + distill_weight * 10)
    labels, peer_logits, leader_logits, attention = random_case(seed, num_students)
    got = to_numpy(losses.okddip_loss(
        tf.constant(labels), outputs_dict(peer_logits, leader_logits, attention),
        temperature=temperature, distill_weight=distill_weight, target_space=target_space))
    want = np_okddip(labels, peer_logits, leader_logits, attention, temperature, distill_weight,
                     target_space)
    assert set(got) == set(want)
    for key in ("peer_ce", "leader_ce", "peer_kd", "leader_kd"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12, err_msg=key)
    # A Python-float weight passes through a float32 tensor inside okddip_loss (ops.cast of a
    # float converts it at floatx first), so 0.3 becomes 0.30000001: allow that rounding.
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-7, err_msg="loss")
    # The KD terms carry T^2 but not the weight; the total weights both levels equally.
    np.testing.assert_allclose(
        got["loss"],
        got["peer_ce"] + got["leader_ce"] + distill_weight * (got["peer_kd"] + got["leader_kd"]),
        rtol=1e-7)


@pytest.mark.parametrize("target_space", ["logits", "probabilities"])
def test_okddip_loss_float32_close_to_float64_reference(target_space):
    labels, peer_logits, leader_logits, attention = random_case(11, 4)
    got = to_numpy(losses.okddip_loss(
        labels, outputs_dict(peer_logits, leader_logits, attention, dtype="float32"),
        temperature=3.0, distill_weight=0.5, target_space=target_space))
    want = np_okddip(labels, peer_logits, leader_logits, attention, 3.0, 0.5, target_space)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6, err_msg=key)


def test_target_spaces_differ():
    """The two options are genuinely different targets (so the tests above can tell them apart)."""
    labels, peer_logits, leader_logits, attention = random_case(3, 4)
    outputs = outputs_dict(peer_logits, leader_logits, attention)
    by_logits = to_numpy(losses.okddip_loss(labels, outputs, target_space="logits"))
    by_probs = to_numpy(losses.okddip_loss(labels, outputs, target_space="probabilities"))
    assert abs(by_logits["peer_kd"] - by_probs["peer_kd"]) > 1e-3
    assert abs(by_logits["leader_kd"] - by_probs["leader_kd"]) > 1e-3
    assert by_logits["peer_ce"] == by_probs["peer_ce"]


def test_distill_weight_accepts_a_variable():
    labels, peer_logits, leader_logits, attention = random_case(5, 3)
    weight = keras.Variable(0.25, dtype="float32", trainable=False)
    got = to_numpy(losses.okddip_loss(
        labels, outputs_dict(peer_logits, leader_logits, attention), distill_weight=weight))
    want = np_okddip(labels, peer_logits, leader_logits, attention, 3.0, 0.25, "logits")
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-7)


def test_unknown_target_space_raises():
    labels, peer_logits, leader_logits, attention = random_case(0, 4)
    with pytest.raises(ValueError, match="target_space"):
        losses.okddip_loss(labels, outputs_dict(peer_logits, leader_logits, attention),
                           target_space="logit")


# The building blocks.

@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_kl_matches_numpy(temperature):
    rng = np.random.default_rng(42)
    target = np_softmax(rng.normal(size=(6, 9)) * 2)
    student = rng.normal(size=(6, 9)) * 2
    got = float(losses.distillation_kl(target, student, temperature))
    np.testing.assert_allclose(got, np_kl(target, student, temperature), rtol=1e-9)
    # Batch mean: duplicating the batch leaves the value unchanged.
    doubled = float(losses.distillation_kl(np.concatenate([target, target]),
                                           np.concatenate([student, student]), temperature))
    np.testing.assert_allclose(doubled, got, rtol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kl_of_identical_distributions_is_only_the_epsilon(temperature, dtype):
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=2.0, size=(8, NUM_CLASSES))
    target = np_softmax(logits / temperature)
    got = float(losses.distillation_kl(tf.constant(target, dtype), tf.constant(logits, dtype),
                                       temperature))
    # T^2 * sum_c (p + eps) log((p + eps) / p) ~ T^2 * C * eps: tiny but not exactly 0.
    assert abs(got) < 1e-5 * NUM_CLASSES
    if dtype == "float64":
        np.testing.assert_allclose(got, np_kl(target, logits, temperature), rtol=1e-6)
        assert got > 0


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(10, NUM_CLASSES))
    labels = rng.integers(0, NUM_CLASSES, size=10)
    np.testing.assert_allclose(float(losses.cross_entropy(labels, logits)), np_ce(labels, logits),
                               rtol=1e-9)


def test_mix_peer_logits_matches_loops():
    _, peer_logits, _, attention = random_case(9, 5)
    got = ops.convert_to_numpy(losses.mix_peer_logits(attention, peer_logits))
    np.testing.assert_allclose(got, np_mix(attention, peer_logits), rtol=1e-12)


@pytest.mark.parametrize("target_space", ["logits", "probabilities"])
@pytest.mark.parametrize("num_students", [2, 3, 4, 5])
def test_uniform_attention_makes_every_peer_target_the_peer_mean(num_students, target_space):
    _, peer_logits, leader_logits, _ = random_case(num_students, num_students)
    num_peers = num_students - 1
    uniform = np.full((BATCH, num_peers, num_peers), 1.0 / num_peers)
    outputs = outputs_dict(peer_logits, leader_logits, uniform)
    T = 3.0
    got = ops.convert_to_numpy(losses.peer_target_probs(outputs, T, target_space))
    if target_space == "logits":
        mean_target = np_softmax(peer_logits.mean(axis=1) / T)
    else:
        mean_target = np_softmax(peer_logits / T).mean(axis=1)
    assert got.shape == (BATCH, num_peers, NUM_CLASSES)
    for a in range(num_peers):
        np.testing.assert_allclose(got[:, a], mean_target, rtol=1e-9, atol=1e-15)
    # ... which is then also the leader's target.
    leader_target = ops.convert_to_numpy(losses.leader_target_probs(peer_logits, T, target_space))
    np.testing.assert_allclose(leader_target, mean_target, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("target_space", ["logits", "probabilities"])
def test_targets_are_distributions(target_space):
    _, peer_logits, leader_logits, attention = random_case(4, 4)
    outputs = outputs_dict(peer_logits, leader_logits, attention)
    peer_t = ops.convert_to_numpy(losses.peer_target_probs(outputs, 3.0, target_space))
    leader_t = ops.convert_to_numpy(losses.leader_target_probs(peer_logits, 3.0, target_space))
    np.testing.assert_allclose(peer_t.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(leader_t.sum(-1), 1.0, rtol=1e-12)
    assert (peer_t > 0).all() and (leader_t > 0).all()


def test_independent_loss_matches_numpy():
    labels, peer_logits, leader_logits, attention = random_case(21, 4)
    # The distillation weight and temperature must not change a loss without distillation.
    got = to_numpy(okddip_tf.methods.Independent().loss(
        labels, outputs_dict(peer_logits, leader_logits, attention), temperature=3.0,
        distill_weight=0.7))
    peer_ce = sum(np_ce(labels, peer_logits[:, a]) for a in range(3))
    leader_ce = np_ce(labels, leader_logits)
    assert set(got) == {"loss", "peer_ce", "leader_ce"}
    np.testing.assert_allclose(got["peer_ce"], peer_ce, rtol=1e-9)
    np.testing.assert_allclose(got["leader_ce"], leader_ce, rtol=1e-9)
    np.testing.assert_allclose(got["loss"], peer_ce + leader_ce, rtol=1e-9)


def test_baseline_loss_matches_numpy():
    rng = np.random.default_rng(22)
    leader_logits = rng.normal(size=(BATCH, NUM_CLASSES))
    labels = rng.integers(0, NUM_CLASSES, size=BATCH)
    got = to_numpy(okddip_tf.methods.Baseline().loss(
        labels, {"leader_logits": leader_logits}, temperature=3.0,
        distill_weight=0.7))
    assert set(got) == {"loss", "leader_ce"}
    np.testing.assert_allclose(got["loss"], np_ce(labels, leader_logits), rtol=1e-9)
    np.testing.assert_allclose(got["leader_ce"], got["loss"], rtol=0)


@pytest.mark.parametrize("num_peers", [2, 3, 4])
def test_pairwise_diversity_matches_numpy(num_peers):
    rng = np.random.default_rng(100 + num_peers)
    peer_logits = rng.normal(scale=2, size=(6, num_peers, NUM_CLASSES))
    got = ops.convert_to_numpy(losses.pairwise_diversity(peer_logits))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, np_diversity(peer_logits), rtol=1e-9)


def test_pairwise_diversity_of_identical_peers_is_the_epsilon():
    logits = np.random.default_rng(0).normal(size=(4, 1, NUM_CLASSES))
    same = np.repeat(logits, 3, axis=1)
    got = ops.convert_to_numpy(losses.pairwise_diversity(same))
    np.testing.assert_allclose(got, 1e-6 * np.sqrt(NUM_CLASSES), rtol=1e-6)


def test_pairwise_diversity_needs_two_peers():
    with pytest.raises(ValueError, match="at least 2"):
        losses.pairwise_diversity(np.zeros((3, 1, NUM_CLASSES)))


# Gradient flow through the real group model (spec §1.2, decision 3).

def tiny_group(detach_targets):
    return okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=4,
                                image_shape=(32, 32, 3),
                                method_options={"detach_targets": detach_targets})


def batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=size)
    return tf.constant(images), tf.constant(labels, dtype=tf.int32)


def grads_of(group, term, variables, seed=0):
    images, labels = batch(seed)
    with tf.GradientTape() as tape:
        outputs = group(images, training=True)
        terms = group.compute_group_loss(labels, outputs)
        value = terms[term]
    return tape.gradient(value, variables)


def is_zero(grad):
    return grad is None or not np.any(ops.convert_to_numpy(grad))


def is_nonzero(grad):
    return grad is not None and float(np.abs(ops.convert_to_numpy(grad)).sum()) > 0


@pytest.fixture(scope="module")
def live_group():
    keras.utils.set_random_seed(0)
    return tiny_group(detach_targets=False)


@pytest.fixture(scope="module")
def detached_group():
    keras.utils.set_random_seed(0)
    return tiny_group(detach_targets=True)


def attention_kernels(group):
    return [group.attention.query.kernel, group.attention.key.kernel]


def test_attention_trains_only_through_live_targets(live_group, detached_group):
    for grad in grads_of(live_group, "loss", attention_kernels(live_group)):
        assert is_nonzero(grad)
    for grad in grads_of(detached_group, "loss", attention_kernels(detached_group)):
        assert is_zero(grad)


@pytest.mark.parametrize("detach", [False, True])
def test_leader_kd_reaches_peers_only_through_live_targets(live_group, detached_group, detach):
    group = detached_group if detach else live_group
    peer_vars = [v for head in group.heads[:-1] for v in head.trainable_variables]
    leader_vars = group.heads[-1].trainable_variables
    grads = grads_of(group, "leader_kd", peer_vars + leader_vars)
    peer_grads, leader_grads = grads[:len(peer_vars)], grads[len(peer_vars):]
    if detach:
        assert all(is_zero(g) for g in peer_grads)
    else:
        for a in range(group.num_peers):
            head_grads = grads_of(group, "leader_kd", group.heads[a].trainable_variables)
            assert any(is_nonzero(g) for g in head_grads), f"peer {a} gets no leader_kd gradient"
    assert any(is_nonzero(g) for g in leader_grads)
    # The leader's classifier kernel in particular.
    assert all(g is not None for g in leader_grads)


def test_peer_ce_does_not_touch_leader_or_attention(live_group):
    leader_vars = live_group.heads[-1].trainable_variables
    variables = leader_vars + attention_kernels(live_group)
    for grad in grads_of(live_group, "peer_ce", variables):
        assert is_zero(grad)
    # ... but does train every peer head.
    for a in range(live_group.num_peers):
        assert any(is_nonzero(g) for g in grads_of(live_group, "peer_ce",
                                                    live_group.heads[a].trainable_variables))
