"""rampup_weight and the callbacks: DistillWeightRampup, NaNGuard, DiversityLogger (spec §4, §6)."""

import json
import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import okddip_tf
from okddip_tf.callbacks import DistillWeightRampup, DiversityLogger, NaNGuard, rampup_weight

BATCH = 4


# rampup_weight

@pytest.mark.parametrize("epoch,expected", [
    (0, 0.0067), (20, 0.060), (40, 0.287), (60, 0.732), (79, 0.9992), (80, 1.0), (200, 1.0),
])
def test_rampup_values_of_the_paper_code(epoch, expected):
    got = rampup_weight(epoch, length=80)
    assert got == pytest.approx(expected, abs=5e-4)
    assert got == pytest.approx(math.exp(-5.0 * (1.0 - min(epoch, 80) / 80) ** 2), rel=1e-12)


def test_rampup_endpoints_and_options():
    assert rampup_weight(0) == pytest.approx(math.exp(-5.0), rel=1e-12)
    assert rampup_weight(80) == 1.0 and rampup_weight(200) == 1.0
    assert rampup_weight(-3) == pytest.approx(math.exp(-5.0))  # clipped at 0
    assert rampup_weight(40, max_weight=2.0) == pytest.approx(2 * math.exp(-1.25))
    assert rampup_weight(2.5, length=5) == pytest.approx(math.exp(-1.25))  # fractional epochs
    values = [rampup_weight(e) for e in range(81)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_rampup_length_zero_and_negative():
    assert rampup_weight(0, length=0) == 1.0
    assert rampup_weight(0, length=0, max_weight=0.5) == 0.5
    with pytest.raises(ValueError, match="length"):
        rampup_weight(0, length=-1)


# DistillWeightRampup inside a real fit.

def random_data(num, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=num).astype(np.int32)
    return images, labels


@pytest.fixture(scope="module")
def group():
    keras.utils.set_random_seed(0)
    model = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=4,
                                 image_shape=(32, 32, 3))
    model.compile(optimizer=okddip_tf.CoupledSGD(0.01))
    return model


def fit(model, steps, epochs=3, callbacks=()):
    images, labels = random_data(BATCH * steps)
    return model.fit(images, labels, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=list(callbacks)).history


def test_per_epoch_rampup_in_fit(group):
    length = 5
    history = fit(group, steps=2, callbacks=[DistillWeightRampup(length=length)])
    expected = [rampup_weight(e, length) for e in range(3)]
    np.testing.assert_allclose(history["distill_weight"], expected, rtol=1e-6)
    assert float(group.distill_weight.numpy()) == pytest.approx(expected[-1], rel=1e-6)


def test_per_step_rampup_in_fit(group):
    length, steps = 5, 2
    history = fit(group, steps=steps, callbacks=[DistillWeightRampup(length, per_step=True)])
    expected = [np.mean([rampup_weight(e + b / steps, length) for b in range(steps)])
                for e in range(3)]
    np.testing.assert_allclose(history["distill_weight"], expected, rtol=1e-6)
    # The per-step means are not the per-epoch values: the test can tell the modes apart.
    assert abs(expected[1] - rampup_weight(1, length)) > 1e-3


def test_compiled_step_reads_the_assigned_weight(group):
    """One step per epoch, so each logged term is that step's value: the total must use w(e)."""
    length = 3
    history = fit(group, steps=1, callbacks=[DistillWeightRampup(length=length)])
    for e in range(3):
        w = rampup_weight(e, length)
        assert history["distill_weight"][e] == pytest.approx(w, rel=1e-6)
        kd = history["peer_kd"][e] + history["leader_kd"][e]
        assert kd > 1e-3  # otherwise the check below could not see w
        expected = history["peer_ce"][e] + history["leader_ce"][e] + w * kd
        assert history["loss"][e] == pytest.approx(expected, rel=1e-5, abs=1e-5)
        # A different weight (the initial 1, or w of another epoch) would not fit.
        assert abs(history["loss"][e] - (expected - w * kd + kd)) > 1e-4


@pytest.mark.parametrize("method,num_students", [("baseline", 1), ("independent", 3)])
def test_rampup_refuses_non_distilling_groups(method, num_students):
    model = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=num_students,
                                 method=method, image_shape=(32, 32, 3))
    assert model.distill_weight is None
    model.compile(optimizer=okddip_tf.CoupledSGD(0.01))
    images, labels = random_data(BATCH)
    with pytest.raises(ValueError, match="distill_weight"):
        model.fit(images, labels, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[DistillWeightRampup()])


def test_per_step_rampup_needs_the_number_of_steps(group):
    callback = DistillWeightRampup(per_step=True)
    callback.set_model(group)
    callback.set_params({"epochs": 1, "steps": None, "verbose": 0})
    with pytest.raises(ValueError, match="steps"):
        callback.on_train_begin()


# NaNGuard

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan"),
                                 np.float32("-inf")])
def test_nan_guard_names_epoch_and_step(bad):
    guard = NaNGuard()
    guard.on_epoch_begin(3)
    guard.on_train_batch_end(6, {"loss": 1.5})
    with pytest.raises(FloatingPointError, match=r"epoch 4, step 8"):  # as Keras numbers them
        guard.on_train_batch_end(7, {"loss": bad})


def test_nan_guard_ignores_finite_and_missing_losses():
    guard = NaNGuard()
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": 2.0})
    guard.on_train_batch_end(1, {})
    guard.on_train_batch_end(2, None)


def test_nan_guard_stops_a_real_fit():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 3), dtype=np.float32)
    x[4:] = np.nan  # the second batch
    y = np.zeros((8, 1), dtype=np.float32)
    with pytest.raises(FloatingPointError, match="epoch 1, step 2"):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[NaNGuard()])


# DiversityLogger

def read_events(log_dir):
    """{tag: [(step, value)]} from every event file under log_dir."""
    events = {}
    for path in sorted(pathlib.Path(log_dir).rglob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    array = tf.make_ndarray(value.tensor)
                else:
                    array = np.array(value.simple_value)
                events.setdefault(value.tag, []).append((event.step, array))
    return events


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_diversity(peer_logits):
    probs = np_softmax(peer_logits.astype(np.float64))
    num_peers = probs.shape[1]
    pairs = [np.sqrt(np.sum((probs[:, j] - probs[:, k] + 1e-6) ** 2, axis=-1))
             for j in range(num_peers) for k in range(j + 1, num_peers)]
    return np.mean(pairs, axis=0)


def test_diversity_logger_writes_tensorboard_events(group, tmp_path):
    images, _ = random_data(10, seed=5)
    logger = DiversityLogger(images, str(tmp_path), batch_size=4)  # several probe batches
    logger.set_model(group)
    logger.on_epoch_end(0)
    logger.on_epoch_end(1)
    events = read_events(tmp_path)
    pairs = [f"attention/peer_{a}_to_peer_{b}" for a in range(3) for b in range(3)]
    for tag in ("diversity/mean", "attention/self_weight", "attention/row_entropy",
                "diversity/peer_0_vs_peer_1", "diversity/peer_1_vs_peer_2",
                "diversity/peer_0_vs_peer_2", *pairs):
        assert tag in events, f"{tag} missing; found {sorted(events)}"
        assert [step for step, _ in events[tag]] == [1, 2]  # epochs as Keras numbers them
    outputs = group(images, training=False)
    peer_logits = keras.ops.convert_to_numpy(outputs["peer_logits"])
    attention = keras.ops.convert_to_numpy(outputs["attention"]).mean(axis=0)
    np.testing.assert_allclose(float(events["diversity/mean"][0][1]),
                               np_diversity(peer_logits).mean(), rtol=1e-4)
    np.testing.assert_allclose(float(events["diversity/peer_0_vs_peer_2"][0][1]),
                               np_diversity(peer_logits[:, [0, 2]]).mean(), rtol=1e-4)
    np.testing.assert_allclose(float(events["attention/self_weight"][0][1]),
                               np.mean(np.diag(attention)), rtol=1e-4)
    # The mean attention is scalars, one per (peer, peer): no unlabelled grey image.
    np.testing.assert_allclose(float(events["attention/peer_2_to_peer_0"][0][1]),
                               attention[2, 0], rtol=1e-4)
    assert not [tag for tag in events if tag.startswith("attention/") and tag not in
                ("attention/self_weight", "attention/row_entropy", *pairs)]


def test_diversity_logger_inside_fit(group, tmp_path):
    images, _ = random_data(6, seed=6)
    fit(group, steps=1, epochs=2, callbacks=[DiversityLogger(images, str(tmp_path))])
    events = read_events(tmp_path)
    assert [step for step, _ in events["diversity/mean"]] == [1, 2]


def test_diversity_logger_skips_groups_with_one_peer(tmp_path):
    model = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=2,
                                 image_shape=(32, 32, 3))
    logger = DiversityLogger(random_data(4)[0], str(tmp_path))
    logger.set_model(model)
    logger.on_epoch_end(0)
    assert not list(pathlib.Path(tmp_path).rglob("events.out.tfevents.*"))


def test_epoch_timer_keeps_the_checkpointed_epochs_times_on_resume(tmp_path, monkeypatch):
    from okddip_tf import rundir

    clock = iter([10.0, 12.5, 20.0, 21.0, 30.0, 34.0])
    monkeypatch.setattr(rundir.time, "perf_counter", lambda: next(clock))
    path = str(tmp_path / "timing.json")
    timer = rundir.EpochTimer(path)
    for epoch in (0, 1):
        timer.on_epoch_begin(epoch)
        timer.on_epoch_end(epoch)
    assert json.load(open(path)) == {"epoch_seconds": [2.5, 1.0]}
    # Killed after epoch 1 was timed but before its checkpoint: the resumed run redoes it.
    resumed = rundir.EpochTimer(path, initial_epoch=1)
    resumed.on_epoch_begin(1)
    resumed.on_epoch_end(1)
    assert json.load(open(path)) == {"epoch_seconds": [2.5, 4.0]}
    # A run checkpointed before timing.json existed: its epochs' times are unknown.
    later = rundir.EpochTimer(str(tmp_path / "none.json"), initial_epoch=2)
    assert later.seconds == [None, None]
