"""CoupledSGD, step_schedule and paper_sgd against PyTorch's SGD semantics (spec §11, decisions 8-10)."""

import keras
import numpy as np
import pytest

from okddip_tf.optim import CoupledSGD, paper_sgd, step_schedule

SHAPES = [(3, 4), (5,), (2, 2, 3)]  # a kernel, a bias-like vector, a conv-like tensor


def torch_sgd_reference(initial, gradients, learning_rates, momentum, nesterov, weight_decay):
    """NumPy re-implementation of torch.optim.SGD.step (dampening 0), float64.

    g <- g + wd * w;  buf <- mu * buf + g (buf = g on the first step);
    g <- g + mu * buf if nesterov else buf;  w <- w - lr * g
    """
    weights = [np.array(w, dtype=np.float64) for w in initial]
    buffers = [None] * len(weights)
    for step_grads, lr in zip(gradients, learning_rates):
        for i, grad in enumerate(step_grads):
            g = np.array(grad, dtype=np.float64)
            if weight_decay:
                g = g + weight_decay * weights[i]
            if momentum:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            weights[i] = weights[i] - lr * g
    return weights


def random_problem(seed, num_steps=5):
    rng = np.random.default_rng(seed)
    initial = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    gradients = [[rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
                 for _ in range(num_steps)]
    return initial, gradients


def run_keras(optimizer, initial, gradients, add_l2=0.0):
    variables = [keras.Variable(w, dtype="float32") for w in initial]
    for step_grads in gradients:
        grads = [g + add_l2 * v.numpy() for g, v in zip(step_grads, variables)]
        optimizer.apply(grads, variables)
    return [v.numpy() for v in variables]


# Two steps per epoch, drops at epochs 1 and 2: lr 0.1, 0.1, 0.01, 0.01, 0.001 for steps 0..4.
STEPS_PER_EPOCH = 2
DROP_EPOCHS = (1, 2)
EXPECTED_LRS = [0.1, 0.1, 0.01, 0.01, 0.001]


@pytest.mark.parametrize("weight_decay", [5e-4, 0.1, 0.0])
@pytest.mark.parametrize("nesterov", [True, False])
def test_coupled_sgd_matches_torch_across_lr_drops(nesterov, weight_decay):
    initial, gradients = random_problem(seed=int(nesterov) * 10 + int(weight_decay * 1e4))
    schedule = step_schedule(STEPS_PER_EPOCH, 0.1, DROP_EPOCHS)
    optimizer = CoupledSGD(schedule, momentum=0.9, nesterov=nesterov, l2=weight_decay)
    got = run_keras(optimizer, initial, gradients)
    want = torch_sgd_reference(initial, gradients, EXPECTED_LRS, 0.9, nesterov, weight_decay)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations.numpy()) == len(gradients)


@pytest.mark.parametrize("nesterov", [True, False])
def test_builtin_keras_sgd_differs_after_the_drop(nesterov):
    """Keras' SGD keeps -lr * g in its velocity, so after an lr drop it is a different optimiser.

    Even with the same coupled L2 added to its gradients by hand, it agrees with PyTorch only
    while the learning rate is constant, which proves the reference above can tell them apart.
    """
    wd = 5e-4
    initial, gradients = random_problem(seed=99)
    builtin = keras.optimizers.SGD(step_schedule(STEPS_PER_EPOCH, 0.1, DROP_EPOCHS),
                                   momentum=0.9, nesterov=nesterov)
    # Before the drop (steps 0, 1) they agree...
    before = run_keras(builtin, initial, gradients[:2], add_l2=wd)
    want_before = torch_sgd_reference(initial, gradients[:2], EXPECTED_LRS[:2], 0.9, nesterov, wd)
    for g, w in zip(before, want_before):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # ... over all 5 steps they do not.
    builtin = keras.optimizers.SGD(step_schedule(STEPS_PER_EPOCH, 0.1, DROP_EPOCHS),
                                   momentum=0.9, nesterov=nesterov)
    after = run_keras(builtin, initial, gradients, add_l2=wd)
    want = torch_sgd_reference(initial, gradients, EXPECTED_LRS, 0.9, nesterov, wd)
    worst = max(float(np.abs(g - w).max()) for g, w in zip(after, want))
    assert worst > 1e-2


def test_builtin_decoupled_weight_decay_is_a_different_optimiser():
    initial, gradients = random_problem(seed=5, num_steps=3)
    decoupled = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    got = run_keras(decoupled, initial, gradients)
    want = torch_sgd_reference(initial, gradients, [0.1] * 3, 0.9, True, 0.1)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) > 1e-3


def test_coupled_sgd_without_momentum():
    initial, gradients = random_problem(seed=8, num_steps=3)
    optimizer = CoupledSGD(0.05, momentum=0.0, nesterov=False, l2=0.01)
    got = run_keras(optimizer, initial, gradients)
    want = torch_sgd_reference(initial, gradients, [0.05] * 3, 0.0, False, 0.01)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_step_schedule_paper_boundaries():
    steps = 390
    schedule = step_schedule(steps)

    def lr(step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    checks = {
        0: 0.1,
        149 * steps: 0.1,  # first step of epoch 149
        150 * steps - 1: 0.1,  # last step of epoch 149
        150 * steps: 0.01,  # first step of epoch 150
        150 * steps + 1: 0.01,
        225 * steps - 1: 0.01,  # last step of epoch 224
        225 * steps: 0.001,  # first step of epoch 225
        300 * steps - 1: 0.001,  # last step of training
    }
    for step, expected in checks.items():
        np.testing.assert_allclose(lr(step), expected, rtol=1e-6, err_msg=f"step {step}")


def test_step_schedule_options():
    assert step_schedule(10, 0.2, drop_epochs=()) == 0.2
    schedule = step_schedule(10, 1.0, drop_epochs=(3,), factor=0.5)
    np.testing.assert_allclose(float(schedule(29)), 1.0)
    np.testing.assert_allclose(float(schedule(30)), 0.5)
    with pytest.raises(ValueError):
        step_schedule(0)


def test_paper_sgd_defaults():
    optimizer = paper_sgd(steps_per_epoch=390)
    assert isinstance(optimizer, CoupledSGD)
    np.testing.assert_allclose(float(optimizer.momentum), 0.9)
    assert optimizer.nesterov is True
    assert optimizer.l2 == pytest.approx(5e-4)
    assert not optimizer.weight_decay  # no decoupled decay on top
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.PiecewiseConstantDecay)
    np.testing.assert_allclose(float(schedule(0)), 0.1)
    np.testing.assert_allclose(float(schedule(150 * 390)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(225 * 390)), 0.001, rtol=1e-6)


def test_paper_sgd_first_step_uses_lr_0_1():
    """A whole optimiser step: the first update is w - 0.1 * (g + wd w) * (1 + mu) under Nesterov."""
    optimizer = paper_sgd(steps_per_epoch=390)
    w0 = np.array([1.0, -2.0], dtype=np.float32)
    g = np.array([0.5, 0.25], dtype=np.float32)
    variable = keras.Variable(w0)
    optimizer.apply([g], [variable])
    coupled = g + 5e-4 * w0
    np.testing.assert_allclose(variable.numpy(), w0 - 0.1 * coupled * 1.9, rtol=1e-6)


def test_weight_decay_is_refused():
    with pytest.raises(ValueError, match="l2"):
        CoupledSGD(0.1, weight_decay=5e-4)


@pytest.mark.parametrize("learning_rate", [0.05, "schedule"])
def test_config_round_trip_keeps_l2(learning_rate):
    if learning_rate == "schedule":
        learning_rate = step_schedule(7)
    optimizer = CoupledSGD(learning_rate, momentum=0.8, nesterov=False, l2=3e-4)
    config = optimizer.get_config()
    assert config["l2"] == pytest.approx(3e-4)
    clone = CoupledSGD.from_config(config)
    assert isinstance(clone, CoupledSGD)
    assert clone.l2 == pytest.approx(3e-4)
    np.testing.assert_allclose(float(clone.momentum), 0.8)
    assert clone.nesterov is False
    # Through Keras' registry as well, as when a compiled model is saved and loaded.
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, CoupledSGD) and revived.l2 == pytest.approx(3e-4)
    # The revived optimiser computes the same update.
    initial, gradients = random_problem(seed=3, num_steps=2)
    a = run_keras(optimizer, initial, gradients)
    b = run_keras(revived, initial, gradients)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6)
