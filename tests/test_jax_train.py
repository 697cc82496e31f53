"""`okddip train` on JAX with TensorFlow absent: trains from an npz, resumes, reports; its `.keras`
checkpoint loads and exports on TensorFlow with the leader's outputs unchanged.

The JAX runs are subprocesses (the Keras backend is fixed at import) in which a meta-path finder
makes `import tensorflow` fail, as on a machine without it. This process (TensorFlow) checks them.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from okddip_tf.deploy import export

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
XLA_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
SIDE, CLASSES = 16, 10

# Runs `okddip train` (sys.argv) with TensorFlow unimportable; then, if asked, saves the leader's
# logits on the npz's test images as computed by JAX from the workdir's checkpoint.
NO_TF_CLI = r'''
import os, sys


class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, BlockTensorFlow())
from okddip_tf import cli

try:
    cli.run()
except SystemExit as exit_:
    if exit_.code:
        raise
import keras
import numpy as np

assert keras.backend.backend() == "jax", keras.backend.backend()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
print("TENSORFLOW_MODULES", loaded)
if os.environ.get("SAVE_LEADER_LOGITS"):
    workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
    group = keras.saving.load_model(os.path.join(workdir, "checkpoints", "last.keras"))
    images = np.load(os.environ["NPZ"])["x_test"]
    np.save(os.environ["SAVE_LEADER_LOGITS"], np.asarray(group.leader.predict(images, verbose=0)))
'''


def write_npz(path, train=96, test=40):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (train, SIDE, SIDE, 3), dtype=np.uint8),
             y_train=rng.integers(0, CLASSES, train), y_test=rng.integers(0, CLASSES, test),
             x_test=rng.integers(0, 256, (test, SIDE, SIDE, 3), dtype=np.uint8))
    return path


def run_jax_cli(workdir, npz, epochs, extra_env=None, backbone="tiny"):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", NPZ=str(npz),
               **(extra_env or {}))
    env.setdefault("XLA_FLAGS", XLA_FAST_COMPILE)  # halves XLA's CPU compile time
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    args = ["train", "--config=configs/cifar100_resnet32_okddip.py", f"--workdir={workdir}",
            "--config.data.source=npz", f"--config.data.path={npz}", "--config.data.name=tiny",
            f"--config.model.backbone={backbone}", "--config.data.batch_size=32",
            "--config.data.eval_batch_size=32", f"--config.train.epochs={epochs}",
            "--config.train.verbose=2", "--config.train.probe_images=16",
            "--config.rampup.length=2"]
    result = subprocess.run([sys.executable, "-c", NO_TF_CLI, *args], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "TENSORFLOW_MODULES []" in output, output[-2000:]
    return output


def run_jax_training(workdir, npz, epochs_then_resumed_to=(2, 3), logits_path=None):
    """Trains `epochs_then_resumed_to[0]` epochs, then reruns to extend the run; both outputs."""
    first = run_jax_cli(workdir, npz, epochs_then_resumed_to[0])
    second = run_jax_cli(workdir, npz, epochs_then_resumed_to[1],
                         {"SAVE_LEADER_LOGITS": str(logits_path)} if logits_path else None)
    return first, second


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jax_train")
    npz = write_npz(folder / "small.npz")
    workdir = folder / "run"
    outputs = run_jax_training(workdir, npz, logits_path=folder / "jax_logits.npy")
    return workdir, npz, folder / "jax_logits.npy", outputs


def test_jax_training_without_tensorflow_writes_the_workdir_layout(jax_run):
    workdir, _, _, (first, _) = jax_run
    for name in ("config.json", "dataset_info.json", "history.json", "metrics.json",
                 "checkpoints/last.keras", "checkpoints/state.json"):
        assert (workdir / name).is_file(), name
    assert "TensorFlow is absent: TensorBoard gets the per-epoch scalars" in first
    assert list((workdir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert "leader_accuracy" in first and "best (epoch" in first  # the summary table
    info = json.loads((workdir / "dataset_info.json").read_text())
    assert info["num_classes"] == CLASSES and info["image_shape"] == [SIDE, SIDE, 3]
    assert info["num_train_examples"] == 96 and info["num_eval_examples"] == 40


def test_jax_training_resumes_and_reports(jax_run):
    workdir, _, _, (first, second) = jax_run
    assert "Resuming" not in first
    assert "after its 2 finished epoch(s)" in second
    history = json.loads((workdir / "history.json").read_text())
    assert len(history["loss"]) == 3 and np.all(np.isfinite(history["loss"]))
    assert len(history["val_leader_accuracy"]) == 3
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["final_epoch"]["epoch"] == 3
    state = json.loads((workdir / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 3
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["source"] == "npz"


def test_jax_checkpoint_loads_on_tensorflow_with_the_same_leader(jax_run):
    workdir, npz, jax_logits_path, _ = jax_run
    group = keras.saving.load_model(workdir / "checkpoints" / "last.keras")
    images = np.load(npz)["x_test"]
    tf_logits = np.asarray(group.leader.predict(images, verbose=0))
    jax_logits = np.load(jax_logits_path)
    assert jax_logits.shape == (40, CLASSES)
    np.testing.assert_allclose(tf_logits, jax_logits, rtol=1e-5, atol=1e-5)


def test_jax_trains_token_ids_from_an_npz_without_tensorflow(tmp_path):
    """The npz source's token ids on JAX (device batches, no augmentation): a .keras text model
    trains as a group with TensorFlow blocked, and the info records the input."""
    rng = np.random.default_rng(1)
    length, vocabulary = 12, 30
    np.savez(tmp_path / "tokens.npz", x_train=rng.integers(0, vocabulary, (96, length)),
             y_train=rng.integers(0, CLASSES, 96), x_test=rng.integers(0, vocabulary, (40, length)),
             y_test=rng.integers(0, CLASSES, 40))
    token_ids = keras.Input((length,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(vocabulary, 8)(token_ids))
    keras.Model(token_ids, keras.layers.Dense(CLASSES)(pooled)).save(tmp_path / "text.keras")
    output = run_jax_cli(tmp_path / "run", tmp_path / "tokens.npz", 1,
                         backbone=tmp_path / "text.keras")
    assert "leader_accuracy" in output
    info = json.loads((tmp_path / "run" / "dataset_info.json").read_text())
    assert (info["image_shape"], info["input_shape"], info["input_dtype"]) == (
        None, [length], "int32")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


def test_jax_workdir_exports_on_tensorflow_with_parity(jax_run, tmp_path):
    workdir, _, _, _ = jax_run
    report = export.export_workdir(str(workdir), export_dir=str(tmp_path / "export"),
                                   formats=["saved_model", "float32"])
    assert report["evaluation"]["count"] == 40  # the npz test split, read through data.path
    for fmt in ("saved_model", "float32"):
        assert report["artefacts"][fmt]["top1_agreement"] == 1.0, fmt
        assert report["artefacts"][fmt]["max_abs_logit_diff"] < 1e-4, fmt


@pytest.mark.slow
def test_jax_resumed_run_equals_an_uninterrupted_one(jax_run, tmp_path):
    workdir, npz, _, _ = jax_run
    run_jax_cli(tmp_path / "straight", npz, 3)
    resumed = json.loads((workdir / "history.json").read_text())
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert sorted(resumed) == sorted(straight)
    for key, values in straight.items():
        np.testing.assert_allclose(resumed[key], values, rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.slow
def test_jax_epoch_benchmark_runs_without_tensorflow(tmp_path):
    """benchmarks/jax_epoch.py on CPU, a few steps of both ResNet-32 models, traced profile."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "c100.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(64) % 100, y_test=np.arange(32) % 100,
             x_test=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
    out = tmp_path / "result.json"
    script = NO_TF_CLI.split("from okddip_tf import cli")[0] + (
        "import runpy\nrunpy.run_path('benchmarks/jax_epoch.py', run_name='__main__')\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", script, f"--npz={npz}", "--steps=2", "--batch_size=16",
         "--timed_epochs=1", "--profile_steps=1", f"--out={out}"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads(out.read_text())
    assert report["machine"]["platform"] == "cpu" and not report["machine"]["tensorflow_imported"]
    assert sorted(report["models"]) == ["group", "single"]
    for model in report["models"].values():
        assert len(model["timed_epoch_seconds"]) == 1 and model["train_images_per_second"] > 0
        assert np.isfinite(model["final_loss"])
    shares = report["models"]["group"]["profile"]["share_by_kind"]
    assert abs(sum(shares.values()) - 1) < 1e-6 and shares["convolution"] > 0
    # ResNet-32: 31 convolutions forward, each with two gradients; four branches for the group.
    assert report["models"]["group"]["profile"]["convolution_ops_per_step"] > 93


def test_tensorboard_scalars_without_tensorflow_are_readable_and_absence_never_fails(
        tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    from okddip_tf import event_log

    writer = event_log.EpochScalars(str(tmp_path))
    writer.on_epoch_end(0, {"loss": 2.5, "val_loss": 3.0})
    writer.on_epoch_end(1, {"loss": 1.5, "val_loss": 2.0})
    writer.on_train_end()
    for split, expected in (("train", [2.5, 1.5]), ("validation", [3.0, 2.0])):
        (path,) = (tmp_path / split).glob("events.out.tfevents.*")
        values = [(event.step, value.tag, value.simple_value)
                  for event in tf.compat.v1.train.summary_iterator(str(path))
                  for value in event.summary.value]
        assert values == [(1, "epoch_loss", expected[0]), (2, "epoch_loss", expected[1])]
    monkeypatch.setattr(event_log, "tensorflow_available", lambda: False)
    monkeypatch.setattr(event_log, "tensorboard_writer_available", lambda: False)
    assert event_log.tensorboard_callbacks(str(tmp_path)) == []
    assert "no TensorBoard logs" in capsys.readouterr().out
