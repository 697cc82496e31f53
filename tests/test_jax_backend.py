"""The JAX backend: the core trains under KERAS_BACKEND=jax with TensorFlow absent, and one JAX
training step equals the TensorFlow step from the same weights.

The backend is fixed when Keras is imported, so the JAX side runs in one subprocess (WORKER
below), in which `import tensorflow` raises ImportError. This process (TF) prepares the weights
and batches of the step comparison, runs the TF steps, and starts the worker once for all tests.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from okddip_tf import CoupledSGD, GroupModel
from okddip_tf.callbacks import rampup_weight

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
# (name, backbone, num_students, image side, batch)
STEP_CASES = [("tiny", "tiny", 4, 16, 16), ("resnet20", "resnet20", 4, 32, 16)]
# The largest |update_jax - update_tf| / |update_tf| allowed (the README's bounds). Measured on
# seeds 0-3 with TF's oneDNN kernels on and off (benchmarks/results/step_parity_jax.json,
# step_parity_precision_jax_onednn0.json): tiny 5.3e-7 to 7.4e-7, ResNet-20 4.6e-4 to 1.8e-3
# (its BatchNorm over 16 images amplifies the backends' different rounding).
STEP_TOLERANCE = {"tiny": 1e-5, "resnet20": 5e-3}
XLA_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
TINY = dict(backbone="tiny", num_classes=10, num_students=4, image_shape=(16, 16, 3))

WORKER = r'''
import json, pathlib, sys
sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
import keras
import numpy as np
import okddip_tf

assert keras.backend.backend() == "jax", keras.backend.backend()
spec = json.loads(sys.argv[1])
result = {"tensorflow_modules": sorted(m for m in sys.modules
                                       if m.split(".")[0] == "tensorflow" and sys.modules[m])}


class Batches(keras.utils.PyDataset):
    def __init__(self, images, labels, batch):
        super().__init__()
        self.images, self.labels, self.batch = images, labels, batch

    def __len__(self):
        return len(self.images) // self.batch

    def __getitem__(self, i):
        part = slice(i * self.batch, (i + 1) * self.batch)
        return self.images[part], self.labels[part]


def fit_checks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 16, 16, 3)).astype("uint8")
    labels = rng.integers(0, 10, size=(64,)).astype("int32")
    keras.utils.set_random_seed(0)
    group = okddip_tf.GroupModel(**spec["tiny"])
    group.compile(optimizer=okddip_tf.CoupledSGD(learning_rate=0.05))
    numpy_fit = group.fit(images[:48], labels[:48], batch_size=16, epochs=2, verbose=0,
                          validation_data=(images[48:], labels[48:]),
                          callbacks=[okddip_tf.DistillWeightRampup(length=2), okddip_tf.NaNGuard()])
    dataset_fit = group.fit(Batches(images, labels, 16), epochs=1, verbose=0)
    leader = group.leader.predict(images[:8], batch_size=8, verbose=0)
    bad = labels[48:, None].copy()  # labels of shape [B, 1] are accepted too
    bad[3] = 10
    try:  # in-memory labels are checked before the loop, on every backend
        group.evaluate(images[48:], bad, batch_size=16, verbose=0)
        numpy_bad_label_error = None
    except ValueError as error:
        numpy_bad_label_error = str(error)
    bad_logs = group.evaluate(Batches(images[48:], bad, 16), verbose=0, return_dict=True)
    return {"numpy_bad_label_error": numpy_bad_label_error,"numpy_fit": numpy_fit.history, "dataset_fit": dataset_fit.history,
            "leader_shape": list(leader.shape), "leader_finite": bool(np.isfinite(leader).all()),
            "bad_label_loss": float(bad_logs["loss"]),
            "bad_label_leader_ce": float(bad_logs["leader_ce"])}


def step(case):
    folder = pathlib.Path(case["dir"])
    group = okddip_tf.GroupModel(**case["group"])
    group.load_weights(folder / "w.weights.h5")
    group.compile(optimizer=okddip_tf.CoupledSGD(learning_rate=0.1, l2=5e-4))
    before = [np.array(v.numpy()) for v in group.weights]
    batch = np.load(folder / "batch.npz")
    logs = group.train_on_batch(batch["images"], batch["labels"], return_dict=True)
    after = {f"{i:04d}": np.array(v.numpy()) - before[i] for i, v in enumerate(group.weights)}
    np.savez(folder / "jax_update.npz", **after)
    return {"logs": {k: float(v) for k, v in logs.items()},
            "paths": [v.path for v in group.weights]}


result["fit"] = fit_checks()
result["steps"] = {name: step(case) for name, case in spec["steps"].items()}
print("RESULT " + json.dumps(result))
'''


def group_options(backbone, num_students, side):
    return dict(backbone=backbone, num_classes=10, num_students=num_students,
                image_shape=(side, side, 3))


def prepare_step(folder, backbone, num_students, side, batch, seed=7):
    """Builds a TF group, saves its initial weights and one batch to `folder`.

    benchmarks/step_parity.py repeats this comparison with other seeds (`seed` - 6 for the batch).
    """
    keras.utils.set_random_seed(seed)
    group = GroupModel(**group_options(backbone, num_students, side))
    group.save_weights(folder / "w.weights.h5")
    rng = np.random.default_rng(seed - 6)
    images = rng.integers(0, 256, size=(batch, side, side, 3)).astype("uint8")
    labels = rng.integers(0, 10, size=(batch,)).astype("int32")
    np.savez(folder / "batch.npz", images=images, labels=labels)
    return group, images, labels


def tf_step(group, images, labels):
    """One TF step (CoupledSGD lr 0.1, l2 5e-4, distill weight 1): the update and the logs."""
    group.compile(optimizer=CoupledSGD(learning_rate=0.1, l2=5e-4))
    assert float(group.distill_weight.numpy()) == 1.0
    before = [np.array(v.numpy()) for v in group.weights]
    logs = group.train_on_batch(images, labels, return_dict=True)
    update = [np.array(v.numpy()) - b for v, b in zip(group.weights, before)]
    return {"update": update, "logs": {k: float(v) for k, v in logs.items()},
            "paths": [v.path for v in group.weights]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """({case: TF step}, the JAX worker's result, {case: folder}).

    The worker starts as soon as the weights are saved and runs while this process steps.
    """
    folders, prepared = {}, {}
    for name, backbone, num_students, side, batch in STEP_CASES:
        folders[name] = tmp_path_factory.mktemp(f"step_{name}")
        prepared[name] = prepare_step(folders[name], backbone, num_students, side, batch)
    spec = {"tiny": TINY, "steps": {
        name: {"dir": str(folders[name]), "group": group_options(backbone, num_students, side)}
        for name, backbone, num_students, side, _ in STEP_CASES}}
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    # Less LLVM optimisation: halves XLA's CPU compile time; the computation is the same.
    env.setdefault("XLA_FLAGS", XLA_FAST_COMPILE)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    log_path = tmp_path_factory.mktemp("jax_worker") / "log.txt"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], env=env,
                                   cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT)
        try:
            tf_results = {name: tf_step(*prepared[name]) for name in prepared}
            process.wait(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, f"JAX worker failed:\n{output[-4000:]}"
    return tf_results, json.loads(lines[-1][len("RESULT "):]), folders


def expected_keys():
    return [m.name for m in GroupModel(**TINY).metrics]


def test_expected_keys_are_the_documented_ones():
    keys = expected_keys()
    for key in ("loss", "peer_ce", "peer_kd", "leader_ce", "leader_kd", "distill_weight",
                "leader_accuracy", "peer_accuracy", "ensemble_accuracy",
                "ensemble_prob_accuracy", "diversity", "peer_0_accuracy", "peer_2_accuracy"):
        assert key in keys


def test_fit_on_jax_without_tensorflow(runs):
    _, result, _ = runs
    assert result["tensorflow_modules"] == []
    fit = result["fit"]
    keys = expected_keys()
    history = fit["numpy_fit"]
    assert sorted(history) == sorted(keys + [f"val_{k}" for k in keys])
    assert sorted(fit["dataset_fit"]) == sorted(keys)
    for logged in (history, fit["dataset_fit"]):
        for key, values in logged.items():
            assert np.all(np.isfinite(values)), (key, values)
    assert history["loss"][0] > 0 and 0 < history["diversity"][0]
    ramp = [rampup_weight(0, 2), rampup_weight(1, 2)]
    np.testing.assert_allclose(history["distill_weight"], ramp, rtol=1e-6)
    # Evaluation does not change the weight: the last epoch's value.
    np.testing.assert_allclose(history["val_distill_weight"][-1], ramp[-1], rtol=1e-6)
    assert fit["leader_shape"] == [8, 10] and fit["leader_finite"]


def test_out_of_range_label_on_jax_makes_the_logged_loss_nan(runs):
    """Documented: no assertion inside a jitted step, the logged loss becomes NaN instead."""
    fit = runs[1]["fit"]
    assert "Labels must lie in [0, 10)" in fit["numpy_bad_label_error"]
    assert np.isnan(fit["bad_label_loss"])  # a dataset's batch: checked in the step only
    assert np.isfinite(fit["bad_label_leader_ce"])


@pytest.mark.parametrize("name", [case[0] for case in STEP_CASES])
def test_one_jax_step_equals_the_tf_step(runs, name):
    tf_results, result, folders = runs
    expected, got = tf_results[name], result["steps"][name]
    # The same variables in the same order (the model's own name differs between processes).
    assert [p.split("/", 1)[-1] for p in got["paths"]] == [
        p.split("/", 1)[-1] for p in expected["paths"]]
    with np.load(folders[name] / "jax_update.npz") as saved:
        jax_update = [saved[f"{i:04d}"] for i in range(len(expected["paths"]))]
    tf_flat = np.concatenate([u.ravel() for u in expected["update"]]).astype(np.float64)
    jax_flat = np.concatenate([u.ravel() for u in jax_update]).astype(np.float64)
    size = np.linalg.norm(tf_flat)
    assert size > 1e-2, "the TF step did not change the weights"
    relative = np.linalg.norm(jax_flat - tf_flat) / size
    print(f"{name}: |update| {size:.4g}, relative JAX-TF difference {relative:.3g}")
    assert relative < STEP_TOLERANCE[name], relative
    assert sorted(got["logs"]) == sorted(expected["logs"])
    np.testing.assert_allclose(got["logs"]["loss"], expected["logs"]["loss"], rtol=1e-5)
    for key, value in expected["logs"].items():
        np.testing.assert_allclose(got["logs"][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
