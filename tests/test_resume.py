"""Runs that survive: resuming after a real SIGKILL, determinism, NaN stops, atomic checkpoints,
workdir checks, and the per-epoch training data that makes exact resumption possible."""

import errno
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import namedtuple

import keras
import numpy as np
import pytest
import tensorflow as tf

from okddip_tf import atomic_files, builders, callbacks, data, distribution, rundir, train
from okddip_tf import config as base
from okddip_tf.data import DatasetInfo

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 4
STEPS = 256 // 32  # the smoke config: 256 training images, batch 32


def smoke_config(tfds_data_dir, **train_keys):
    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir = tfds_data_dir
    config.train.verbose = 0
    config.train.update(train_keys)
    return config


def okddip_train(workdir, tfds_data_dir, *extra):
    """Starts `okddip train` on the smoke config, deterministic, EPOCHS epochs.

    Its output goes to files beside the workdir (a pipe nobody reads could fill and block it).
    """
    command = [sys.executable, "-m", "okddip_tf.cli", "train",
               "--config=configs/cifar100_resnet32_okddip.py:smoke", f"--workdir={workdir}",
               f"--config.data.data_dir={tfds_data_dir}", f"--config.train.epochs={EPOCHS}",
               "--config.train.deterministic=True", *extra]
    logs = [open(f"{workdir}.{name}.log", "w+") for name in ("stdout", "stderr")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, text=True, stdout=logs[0],
                               stderr=logs[1], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    process.logs = logs
    return process


def output(process):
    """(stdout, stderr) of a finished process."""
    texts = []
    for log in process.logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return texts


def finish(process, timeout=600):
    process.wait(timeout=timeout)
    stdout, stderr = output(process)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def epochs_done(workdir):
    try:
        return json.loads((workdir / "checkpoints" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


def kill_after_first_checkpoint(process, workdir, timeout=600):
    """SIGKILLs `process` a moment after its first checkpoint: early in its second epoch."""
    deadline = time.monotonic() + timeout
    while epochs_done(workdir) < 1:
        assert process.poll() is None, output(process)[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    time.sleep(0.05)  # into the next epoch's steps, far from the end of the run
    process.send_signal(signal.SIGKILL)
    process.wait()
    output(process)
    return epochs_done(workdir)


Runs = namedtuple("Runs", "first second resumed killed_at resume_stdout")


@pytest.fixture(scope="module")
def runs(tfds_data_dir, tmp_path_factory):
    """Two uninterrupted deterministic runs and one killed then rerun, all real processes.

    The three start together (the start-up and tracing dominate and overlap on 2 cores).
    """
    root = tmp_path_factory.mktemp("runs")
    first, second, resumed = root / "first", root / "second", root / "resumed"
    processes = [okddip_train(path, tfds_data_dir) for path in (first, second, resumed)]
    killed_at = kill_after_first_checkpoint(processes[2], resumed)
    finish(processes[0])
    finish(processes[1])
    resume_stdout = finish(okddip_train(resumed, tfds_data_dir))
    return Runs(first, second, resumed, killed_at, resume_stdout)


def load(workdir):
    return keras.saving.load_model(workdir / "checkpoints" / "last.keras")


def assert_same_run(workdir_a, workdir_b):
    """Bitwise-equal weights and optimizer variables, and equal history, of two workdirs."""
    a, b = load(workdir_a), load(workdir_b)
    assert len(a.weights) == len(b.weights) > 0
    for x, y in zip(a.weights + a.optimizer.variables, b.weights + b.optimizer.variables):
        assert x.path == y.path
        assert np.array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)), \
            x.path
    history_a = json.loads((workdir_a / "history.json").read_text())
    assert history_a == json.loads((workdir_b / "history.json").read_text())
    assert all(len(values) == EPOCHS for values in history_a.values())


# --------------------------------------------------------------------------- real processes


def test_two_deterministic_runs_are_bitwise_identical(runs):
    assert_same_run(runs.first, runs.second)


def test_a_killed_run_resumes_to_the_weights_and_history_of_an_uninterrupted_one(runs):
    assert 1 <= runs.killed_at < EPOCHS, "the kill came too late to test anything"
    assert f"after its {runs.killed_at} finished epoch(s)" in runs.resume_stdout
    assert_same_run(runs.first, runs.resumed)
    assert epochs_done(runs.resumed) == EPOCHS
    assert not [name for name in os.listdir(runs.resumed / "checkpoints")
                if name.startswith(atomic_files.TEMPORARY_PREFIXES)]
    metrics = json.loads((runs.resumed / "metrics.json").read_text())
    assert metrics == json.loads((runs.first / "metrics.json").read_text())


def test_a_damaged_checkpoint_is_reported_and_the_run_goes_on_from_the_previous_one(
        runs, tfds_data_dir, tmp_path):
    """`okddip train` on a workdir whose last.keras was truncated after the run: the error names
    the file and both hashes and keeps the run; following its advice (previous.keras) resumes
    to the uninterrupted run's weights and history."""
    workdir = tmp_path / "damaged"
    shutil.copytree(runs.first, workdir)
    last, previous = (workdir / "checkpoints" / name for name in ("last.keras", "previous.keras"))
    state = json.loads((workdir / "checkpoints" / "state.json").read_text())
    assert state["previous"] == {"checkpoint": "previous.keras", "epochs_done": EPOCHS - 1,
                                 "checkpoint_sha256": rundir.file_sha256(previous)}
    intact = last.read_bytes()
    last.write_bytes(intact[:len(intact) // 2])
    process = okddip_train(workdir, tfds_data_dir)
    process.wait(timeout=600)
    stderr = output(process)[1]
    assert process.returncode == 1, stderr[-3000:]
    for part in (f"The checkpoint {last} cannot be read: it is truncated",
                 f"Its SHA-256 is {rundir.file_sha256(last)}", state["checkpoint_sha256"],
                 f"`cp {previous} {last}`", f"trains epoch {EPOCHS} on again"):
        assert part in stderr, stderr[-3000:]
    assert "fewer than" not in stderr
    shutil.copyfile(previous, last)
    stdout = finish(okddip_train(workdir, tfds_data_dir))
    assert f"after its {EPOCHS - 1} finished epoch(s)" in stdout
    assert_same_run(runs.first, workdir)


def test_the_checkpoint_holds_the_optimizer_state(runs, tfds_data_dir):
    """load_model brings back the step count and momenta; resuming loads the same."""
    loaded = load(runs.first)
    assert int(loaded.optimizer.iterations) == EPOCHS * STEPS
    momenta = [v for v in loaded.optimizer.variables if v.path.endswith("_momentum")]
    assert momenta and all(np.any(keras.ops.convert_to_numpy(v)) for v in momenta)

    config = smoke_config(tfds_data_dir, epochs=EPOCHS)
    info = DatasetInfo(**json.loads((runs.first / "dataset_info.json").read_text()))
    group = builders.build_compiled_group(config, info, tf.distribute.get_strategy(), STEPS,
                                          builders.build_method(config))
    assert int(group.optimizer.iterations) == 0
    rundir.restore(group, str(runs.first))
    for x, y in zip(loaded.weights + loaded.optimizer.variables,
                    group.weights + group.optimizer.variables):
        assert np.array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_a_finished_run_is_reported_not_retrained(runs, tfds_data_dir, capsys):
    checkpoint = runs.resumed / "checkpoints" / "last.keras"
    before = checkpoint.read_bytes(), (runs.resumed / "history.json").read_text()
    config = smoke_config(tfds_data_dir, epochs=EPOCHS, deterministic=True)
    group, history, metrics = train.train_and_evaluate(config, str(runs.resumed))
    assert "holds a finished run (4 epochs): nothing to train" in capsys.readouterr().out
    assert (checkpoint.read_bytes(), (runs.resumed / "history.json").read_text()) == before
    assert history == json.loads(before[1])
    assert metrics == json.loads((runs.resumed / "metrics.json").read_text())
    assert int(group.optimizer.iterations) == EPOCHS * STEPS

    config.train.epochs = EPOCHS - 1
    with pytest.raises(ValueError, match="more than train.epochs=3"):
        train.train_and_evaluate(config, str(runs.resumed))


def test_a_different_config_is_refused(runs, tfds_data_dir):
    config = smoke_config(tfds_data_dir, epochs=EPOCHS, deterministic=True)
    config.model.temperature = 4.0
    config.optim.learning_rate = 0.05
    files = sorted(os.listdir(runs.resumed))
    with pytest.raises(ValueError) as error:
        train.train_and_evaluate(config, str(runs.resumed))
    message = str(error.value)
    for part in ("different config", "model.temperature: 3.0 there, 4.0 now",
                 "optim.learning_rate: 0.1 there, 0.05 now", "new --workdir",
                 "--config.train.resume=False"):
        assert part in message
    assert sorted(os.listdir(runs.resumed)) == files


def test_resume_false_moves_the_old_run_aside(runs, tfds_data_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(runs.first, workdir)
    (workdir / "notes.txt").write_text("mine")

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(distribution, "set_determinism", started)  # stop right after the checks
    config = smoke_config(tfds_data_dir, resume=False)
    config.model.temperature = 4.0  # not compared: nothing is resumed
    with pytest.raises(Started):
        train.train_and_evaluate(config, str(workdir))
    (replaced,) = workdir.glob("replaced-*")
    assert sorted(os.listdir(workdir)) == sorted(["checkpoints", "notes.txt", replaced.name])
    assert not os.listdir(workdir / "checkpoints")
    assert sorted(os.listdir(replaced)) == sorted(os.listdir(runs.first))
    assert (replaced / "checkpoints" / "last.keras").read_bytes() == (
        runs.first / "checkpoints" / "last.keras").read_bytes()


# --------------------------------------------------------------------------- NaN


class PoisonWeights(keras.callbacks.Callback):
    """Makes every trainable weight NaN before step `step` of epoch `epoch`.

    All of them, not only the first kernel: TensorFlow fuses batch norm + ReLU, and oneDNN's fused
    kernel turns NaN into 0, so with oneDNN a NaN first convolution leaves the training outputs
    finite (and only the validation loss NaN).
    """

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            for weight in self.model.trainable_variables:
                weight.assign(np.full(weight.shape, np.nan, weight.dtype))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tfds_data_dir, tmp_path, monkeypatch):
    build_callbacks = train.build_callbacks
    monkeypatch.setattr(train, "build_callbacks", lambda *args: [
        PoisonWeights(epoch=1, step=3), *build_callbacks(*args)])
    config = smoke_config(tfds_data_dir, epochs=3)
    with pytest.raises(FloatingPointError) as error:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    for part in ("The training loss became nan at epoch 2, step 4",  # 1-based
                 f"after {STEPS + 4} optimizer updates; learning rate 0.1",
                 "Likely causes: a learning rate too high",
                 "The last good checkpoint, after 1 finished epoch(s), is kept at"):
        assert part in message
    assert epochs_done(tmp_path) == 1
    group = load(tmp_path)
    assert int(group.optimizer.iterations) == STEPS
    assert all(np.isfinite(w).all() for w in group.get_weights())
    history = json.loads((tmp_path / "history.json").read_text())
    assert all(len(values) == 1 for values in history.values())
    assert not (tmp_path / "metrics.json").exists()


def test_nan_guard_stops_at_an_epoch_end_with_non_finite_validation_loss():
    guard = callbacks.NaNGuard()
    guard.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0, "val_leader_accuracy": float("nan")})
    with pytest.raises(FloatingPointError, match=r"end of epoch 3, val_loss = inf"):
        guard.on_epoch_end(2, {"loss": 1.0, "val_loss": float("inf")})


# --------------------------------------------------------------------------- atomic writes


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    return model


def test_a_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoints"
    saver = rundir.GroupCheckpoint(str(directory))
    model = tiny_model()
    saver.set_model(model)
    saver.on_epoch_end(0, {"loss": 1.0})
    before = {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    assert sorted(before) == ["last.keras", "state.json"]

    def crash(path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.EIO, "the disk went away mid-save")

    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(OSError, match="mid-save"):
        saver.on_epoch_end(1, {"loss": 0.5})
    after = {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    assert after == {**before, "previous.keras": before["last.keras"]}
    state = json.loads(before["state.json"])
    assert state["epochs_done"] == 1
    assert state["checkpoint_sha256"] == rundir.file_sha256(directory / "last.keras")
    keras.saving.load_model(directory / "last.keras")


def test_an_epoch_with_a_non_finite_loss_is_not_saved(tmp_path):
    saver = rundir.GroupCheckpoint(str(tmp_path))
    saver.set_model(tiny_model())
    with pytest.warns(UserWarning, match="Not saving epoch 1:"):
        saver.on_epoch_end(0, {"loss": 1.0, "val_loss": float("nan")})
    assert not os.listdir(tmp_path)


def test_leftovers_of_killed_writes_are_removed(tmp_path):
    for name in (".partial-123-last.keras", ".tmp-abc.json", "last.keras"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".partial-export-dir").mkdir()
    assert atomic_files.remove_leftovers(str(tmp_path)) == [".partial-123-last.keras",
                                                        ".tmp-abc.json"]
    assert sorted(os.listdir(tmp_path)) == [".partial-export-dir", "last.keras"]


# --------------------------------------------------------------------------- progress files


def fake_checkpoint(tag):
    """The bytes of a zip laid out as a .keras file (same bytes for the same tag)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, json.dumps({"tag": tag.decode()}))
    return buffer.getvalue()


def write_run(workdir, checkpoint=b"new", recorded=b"old", epochs=2, history_epochs=3):
    (workdir / "checkpoints").mkdir(parents=True)
    if checkpoint is not None:
        (workdir / "checkpoints" / "last.keras").write_bytes(fake_checkpoint(checkpoint))
    if recorded is not None:
        (workdir / "old").write_bytes(fake_checkpoint(recorded))
        atomic_files.write_json(workdir / "checkpoints" / "state.json", {
            "epochs_done": epochs,
            "checkpoint_sha256": rundir.file_sha256(workdir / "old")})
    history = {"loss": list(range(history_epochs)), "val_loss": list(range(history_epochs))}
    atomic_files.write_json(workdir / "history.json", history)


@pytest.mark.parametrize("checkpoint, recorded, expected", [
    (b"old", b"old", 2),  # state.json describes last.keras
    (b"new", b"old", 3),  # killed between saving last.keras and writing state.json
    (b"new", None, 1),  # killed before the first state.json
])
def test_progress_is_consistent_after_a_kill_anywhere(tmp_path, checkpoint, recorded, expected):
    write_run(tmp_path, checkpoint, recorded)
    done, history = rundir.read_progress(str(tmp_path))
    assert done == expected
    assert history == {"loss": list(range(expected)), "val_loss": list(range(expected))}


def test_progress_errors(tmp_path):
    write_run(tmp_path / "no_checkpoint", checkpoint=None)
    with pytest.raises(FileNotFoundError, match="records 2 finished epochs, but .* missing"):
        rundir.read_progress(str(tmp_path / "no_checkpoint"))
    write_run(tmp_path / "short", history_epochs=2)
    with pytest.raises(ValueError, match="fewer than the 3 epochs"):
        rundir.read_progress(str(tmp_path / "short"))


def test_each_save_keeps_the_checkpoint_it_replaces_as_previous(tmp_path):
    directory = tmp_path / "checkpoints"
    saver = rundir.GroupCheckpoint(str(directory))
    model = tiny_model()
    saver.set_model(model)
    saver.on_epoch_end(0, {"loss": 1.0})
    first = (directory / "last.keras").read_bytes()
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    saver.on_epoch_end(1, {"loss": 0.5})
    assert (directory / "previous.keras").read_bytes() == first != (
        directory / "last.keras").read_bytes()
    state = json.loads((directory / "state.json").read_text())
    assert state["epochs_done"] == 2
    assert state["checkpoint_sha256"] == rundir.file_sha256(directory / "last.keras")
    assert state["previous"] == {"checkpoint": "previous.keras", "epochs_done": 1,
                                 "checkpoint_sha256": hashlib.sha256(first).hexdigest()}


def damage(path, how):
    intact = path.read_bytes()
    if how == "truncated":
        path.write_bytes(intact[:len(intact) // 2])
    elif how == "not a zip":
        path.write_bytes(b"not a checkpoint at all")
    elif how == "not a Keras model":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "a zip, but no model")
    else:  # a flipped byte inside the weights: the zip's CRC catches it
        position = intact.index(b"HDF") + 100
        path.write_bytes(intact[:position] + bytes([intact[position] ^ 0xFF])
                         + intact[position + 1:])


@pytest.mark.parametrize("how, problem", [
    ("truncated", "is truncated or not a zip archive"),
    ("not a zip", "is truncated or not a zip archive"),
    ("not a Keras model", "is a zip archive but not a Keras model (it lacks config.json and "
                          "model.weights.h5)"),
    ("bit flip", "is damaged: its member model.weights.h5 fails its CRC check"),
])
def test_a_damaged_checkpoint_is_reported_with_its_hashes_and_the_previous_one(tmp_path, how,
                                                                                problem):
    workdir, directory = tmp_path, tmp_path / "checkpoints"
    saver, model = rundir.GroupCheckpoint(str(directory)), tiny_model()
    saver.set_model(model)
    for epoch in range(3):  # each epoch's checkpoint differs from the one before
        model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
        saver.on_epoch_end(epoch, {"loss": 1.0})
    atomic_files.write_json(workdir / "history.json", {"loss": [3.0, 2.0, 1.0]})
    last, previous = directory / "last.keras", directory / "previous.keras"
    recorded = json.loads((directory / "state.json").read_text())["checkpoint_sha256"]
    damage(last, how)
    with pytest.raises(ValueError) as error:
        rundir.read_progress(str(workdir))
    message = str(error.value)
    assert f"The checkpoint {last} cannot be read: it {problem}" in message
    assert f"Its SHA-256 is {rundir.file_sha256(last)}, but" in message
    assert f"records {recorded} for it (after 3 epoch(s))" in message
    assert f"`cp {previous} {last}`" in message and "trains epoch 3 on again" in message
    assert "fewer than" not in message
    # The advice works: the previous checkpoint resumes at its epoch, with its history.
    shutil.copyfile(previous, last)
    assert rundir.read_progress(str(workdir)) == (2, {"loss": [3.0, 2.0]})
    keras.saving.load_model(last)
    # ... and the next save records it as the previous checkpoint again.
    saver = rundir.GroupCheckpoint(str(directory))
    saver.set_model(tiny_model())
    saver.on_epoch_end(2, {"loss": 1.0})
    state = json.loads((directory / "state.json").read_text())
    assert state["epochs_done"] == 3 and state["previous"]["epochs_done"] == 2
    assert state["previous"]["checkpoint_sha256"] == rundir.file_sha256(previous)


def test_a_damaged_checkpoint_without_a_kept_previous_one_says_so(tmp_path):
    write_run(tmp_path, checkpoint=b"old", recorded=b"old")
    last = tmp_path / "checkpoints" / "last.keras"
    damage(last, "truncated")
    with pytest.raises(ValueError, match=r"cannot be read: it is truncated.* There is no intact "
                                         r"previous checkpoint to fall back to \(.*missing\)"):
        rundir.read_progress(str(tmp_path))
    # A copy kept just before a save that a kill interrupted is the recorded checkpoint itself.
    shutil.copyfile(tmp_path / "old", tmp_path / "checkpoints" / "previous.keras")
    with pytest.raises(ValueError, match=r"previous.keras is an intact copy of it: `cp "):
        rundir.read_progress(str(tmp_path))


def test_config_differences_ignore_what_a_resumed_run_may_change():
    saved = json.loads(json.dumps(base.get_base_config().to_dict()))
    config = base.get_base_config()
    config.train.epochs, config.train.verbose, config.data.data_dir = 400, 2, "/elsewhere"
    config.tuner.max_trials = 99  # only `okddip tune` reads the tuner section
    assert rundir.config_differences(saved, config) == {}
    del saved["tuner"]  # a run saved before the tuner section existed
    assert rundir.config_differences(saved, config) == {}
    del saved["data"]["path"]  # saved before data.path existed: unset, it changes nothing
    assert rundir.config_differences(saved, config) == {}
    config.data.path = "cifar100.npz"
    assert rundir.config_differences(saved, config) == {
        "data.path": (None, "cifar100.npz")}
    config.data.path = None
    config.optim.drop_epochs = (100, 200)
    assert rundir.config_differences(saved, config) == {
        "optim.drop_epochs": ([150, 225], [100, 200])}


# --------------------------------------------------------------------------- workdir checks


def test_an_unwritable_workdir_fails_before_anything_runs(tmp_path, monkeypatch):
    config = base.apply_smoke(base.get_base_config())
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="Cannot write to .*file/run"):
        train.train_and_evaluate(config, str(tmp_path / "file" / "run"))

    def read_only(*args, **kwargs):  # tests run as root, where chmod stops nothing
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic_files.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError, match=r"Cannot write to .*run \(Read-only file system"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == []


def test_a_full_disk_fails_before_training(tfds_data_dir, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=5 * 2**20))
    expected = r"5\.0 MiB free, but checkpointing this .* MiB group"
    with pytest.raises(OSError, match=expected) as error:
        train.train_and_evaluate(smoke_config(tfds_data_dir), str(tmp_path))
    assert error.value.errno == errno.ENOSPC
    assert not os.listdir(tmp_path / "checkpoints")
    assert not (tmp_path / "history.json").exists()


# --------------------------------------------------------------------------- training data


def numbered_images(count=40):
    """Image i is filled with the value i (kept by the crop's centre), label i."""
    images = np.repeat(np.arange(count, dtype=np.uint8), 32 * 32 * 3).reshape(count, 32, 32, 3)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(count)))


def batches(dataset):
    return [(x.tobytes(), y.tolist()) for x, y in dataset.as_numpy_iterator()]


def test_an_epochs_data_depends_only_on_seed_and_epoch():
    build = lambda initial, seed=7: data.prepare_dataset(
        numbered_images(), batch_size=8, training=True, seed=seed, cache=True, epochs=4,
        initial_epoch=initial)
    whole = build(0)
    assert int(whole.cardinality()) == 4 * 5
    everything = batches(whole)
    assert batches(whole) == everything  # a second pass repeats it
    tf.random.set_seed(12345)  # the global seed plays no part
    assert batches(build(2)) == everything[10:]
    epochs = [everything[i * 5:(i + 1) * 5] for i in range(4)]
    orders = [sum((labels for _, labels in epoch), []) for epoch in epochs]
    assert all(sorted(order) == list(range(40)) for order in orders)
    assert len({tuple(order) for order in orders}) == 4
    assert batches(build(0, seed=8)) != everything
    with pytest.raises(ValueError, match="initial_epoch needs epochs"):
        data.prepare_dataset(numbered_images(), batch_size=8, training=True, initial_epoch=1)


def test_the_cache_is_filled_once_for_all_epochs():
    reads = []

    def count(image, label):
        reads.append(1)
        return image, label

    source = numbered_images().map(
        lambda x, y: tf.py_function(count, [x, y], [tf.uint8, tf.int64]))
    source = source.map(lambda x, y: (tf.ensure_shape(x, (32, 32, 3)), y))
    dataset = data.prepare_dataset(source, batch_size=8, training=True, seed=0, cache=True,
                                   epochs=3)
    assert len(batches(dataset)) == 15 and len(reads) == 40


def test_best_epoch_is_kept_as_best_keras_and_recorded_in_state(tmp_path):
    """best.keras: the checkpoint of the epoch whose val_<reported> beats every earlier one (the
    first of equal values, as metrics.json's best epoch), its epoch and value in state.json."""
    directory = tmp_path / "checkpoints"
    monitor = "val_leader_accuracy"
    saver, model = rundir.GroupCheckpoint(str(directory), monitor=monitor), tiny_model()
    saver.set_model(model)
    saved = []
    for epoch, accuracy in enumerate([0.1, 0.5, 0.5, 0.3]):
        model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
        saver.on_epoch_end(epoch, {"loss": 1.0, monitor: accuracy})
        saved.append((directory / "last.keras").read_bytes())
    assert (directory / "best.keras").read_bytes() == saved[1] != saved[3]
    state = json.loads((directory / "state.json").read_text())
    assert state["epochs_done"] == 4
    assert state["best"] == {"checkpoint": "best.keras", "epochs_done": 2, "monitor": monitor,
                             "value": 0.5, "checkpoint_sha256": hashlib.sha256(saved[1]).hexdigest()}
    keras.saving.load_model(directory / "best.keras")
    # A resumed run goes on from the recorded best: 0.4 does not beat it, 0.9 does.
    saver = rundir.GroupCheckpoint(str(directory), monitor=monitor)
    saver.set_model(model)
    saver.on_epoch_end(4, {"loss": 1.0, monitor: 0.4})
    assert (directory / "best.keras").read_bytes() == saved[1]
    saver.on_epoch_end(5, {"loss": 1.0, monitor: 0.9})
    state = json.loads((directory / "state.json").read_text())
    assert state["best"]["epochs_done"] == 6 and state["best"]["value"] == 0.9
    assert (directory / "best.keras").read_bytes() == (directory / "last.keras").read_bytes()
    # A run resumed from an earlier epoch forgets a best recorded for an epoch it trains again.
    saver = rundir.GroupCheckpoint(str(directory), monitor=monitor)
    saver.set_model(model)
    saver.on_epoch_end(1, {"loss": 1.0, monitor: 0.2})
    assert json.loads((directory / "state.json").read_text())["best"]["epochs_done"] == 2


def test_a_workdir_from_before_best_keras_reads_as_before(tmp_path):
    """state.json without a "best" record: progress reads, a new saver starts without a best,
    and no monitor (a bare GroupCheckpoint) writes no best.keras."""
    write_run(tmp_path, checkpoint=b"old", recorded=b"old", history_epochs=2)
    assert rundir.read_progress(str(tmp_path))[0] == 2
    assert rundir.best_record(str(tmp_path / "checkpoints")) is None
    saver = rundir.GroupCheckpoint(str(tmp_path / "fresh"))
    saver.set_model(tiny_model())
    saver.on_epoch_end(0, {"loss": 1.0, "val_leader_accuracy": 0.5})
    assert not (tmp_path / "fresh" / "best.keras").exists()
    assert "best" not in json.loads((tmp_path / "fresh" / "state.json").read_text())


def test_a_vgg_run_saved_before_model_dropout_resumes_only_with_its_dropout():
    """Before model.dropout, vgg16 trained with 0.5 in every group. A branch run (whose
    authors' value is 0.5) resumes; a network run (authors' 0.0) is refused rather than
    switching its dropout mid-run, and resumes with --config.model.dropout=0.5."""
    for sharing, differences in (("branch", {}),
                                 ("network", {"model.dropout": (0.5, 0.0)})):
        config = base.get_base_config()
        config.model.backbone, config.model.sharing = "vgg16", sharing
        saved = json.loads(json.dumps(config.to_dict()))
        del saved["model"]["dropout"]
        assert rundir.config_differences(saved, config) == differences, sharing
        config.model.dropout = 0.5
        assert rundir.config_differences(saved, config) == {}
    # A run that set it compares by the value it trains with: None (auto) is 0.0 here.
    config = base.get_base_config()
    config.model.backbone, config.model.sharing = "vgg16", "network"
    saved = json.loads(json.dumps(config.to_dict()))
    config.model.dropout = 0.0
    assert rundir.config_differences(saved, config) == {}
