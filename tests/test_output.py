"""What a run shows and records: progress lines, epoch numbers, TensorBoard tags (issue 25)."""

import io
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import okddip_tf
from okddip_tf import progress, train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LOGGED = {"loss", "peer_ce", "leader_ce", "peer_kd", "leader_kd", "distill_weight",
          "leader_accuracy", "peer_accuracy", "ensemble_accuracy", "ensemble_prob_accuracy",
          "diversity", "student_accuracy", "student_ensemble_accuracy", "student_diversity",
          "peer_0_accuracy", "peer_1_accuracy", "peer_2_accuracy"}
STEPS = 8  # the smoke run: 256 training images in batches of 32


@pytest.fixture(scope="module")
def piped_run(tfds_data_dir, tmp_path_factory):
    """`okddip train` on the smoke config with the default progress, its stdout a pipe."""
    workdir = tmp_path_factory.mktemp("piped")
    result = subprocess.run(
        [sys.executable, "-m", "okddip_tf.cli", "train",
         "--config=configs/cifar100_resnet32_okddip.py:smoke", f"--workdir={workdir}",
         f"--config.data.data_dir={tfds_data_dir}", "--config.train.verbose=1"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_piped_output_is_short_lines_one_per_epoch(piped_run):
    workdir, stdout = piped_run
    assert "\r" not in stdout and "\b" not in stdout and "\x1b" not in stdout
    lines = stdout.splitlines()
    too_long = [line for line in lines if len(line) > progress.WIDTH]
    assert not too_long, too_long
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert [line.split(" - ")[0] for line in epoch_lines] == ["Epoch 1/2", "Epoch 2/2"]
    # The loss and OKDDip's reported accuracy (the leader's), each with its validation value.
    for line in epoch_lines:
        assert re.search(r" - loss: \d+\.\d{4} \(val \d+\.\d{4}\) - leader_accuracy: "
                         r"\d\.\d{4} \(val \d\.\d{4}\)$", line), line
    assert not [line for line in lines if re.search(rf"\b\d+/{STEPS}\b", line)]  # no step lines
    assert "peer_kd" not in stdout and "student_diversity:" not in stdout
    history = json.loads((workdir / "history.json").read_text())
    assert set(history) == LOGGED | {f"val_{key}" for key in LOGGED}
    assert all(len(values) == 2 for values in history.values())


def test_summary_and_metrics_number_epochs_from_1(piped_run):
    workdir, stdout = piped_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    history = json.loads((workdir / "history.json").read_text())
    best = int(np.argmax(history["val_leader_accuracy"])) + 1
    assert metrics["epoch_numbering"] == "1-based"
    assert metrics["epochs"] == 2 and metrics["final_epoch"]["epoch"] == 2
    assert metrics["best_epoch_selected_on_test_split"]["epoch"] == best
    assert metrics["final_epoch"]["leader_accuracy"] == history["val_leader_accuracy"][1]
    assert "final (epoch 2)" in stdout and f"best (epoch {best})*" in stdout
    assert train.read_metrics(workdir / "metrics.json") == metrics  # read as written


def read_scalars(directory):
    """[(tag, step, kind)] of every summary value in the event files under `directory`."""
    values = []
    for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name or value.WhichOneof("value")
                values.append((value.tag, event.step, kind))
    return values


def test_tensorboard_logs_each_metric_once_per_split(piped_run):
    workdir, _ = piped_run
    logs = workdir / "tensorboard"
    train_tags = read_scalars(logs / "train")
    validation_tags = read_scalars(logs / "validation")
    assert sorted(train_tags) == sorted(
        (f"epoch_{key}", step, "simple_value")
        for key in LOGGED | {"learning_rate"} for step in (1, 2))
    # Every validation metric once an epoch (no evaluation_*_vs_iterations copy), and the
    # distillation weight and the learning rate under train/ only.
    assert sorted(validation_tags) == sorted(
        (f"epoch_{key}", step, "simple_value")
        for key in LOGGED - {"distill_weight"} for step in (1, 2))
    okddip = read_scalars(logs / "okddip")
    pairs = {f"attention/peer_{a}_to_peer_{b}" for a in range(3) for b in range(3)}
    assert pairs <= {tag for tag, _, _ in okddip}
    assert {kind for _, _, kind in okddip} == {"scalars"}  # no image
    assert {step for _, step, _ in okddip} == {1, 2}


def test_read_metrics_converts_files_written_with_epochs_from_0():
    fixture = REPO_ROOT / "tests" / "fixtures" / "cifar100_resnet20_baseline" / "metrics.json"
    written = json.loads(fixture.read_text())
    assert "epoch_numbering" not in written and written["final_epoch"]["epoch"] == 29
    metrics = train.read_metrics(fixture)
    assert metrics["epochs"] == 30 and metrics["epoch_numbering"] == "1-based"
    assert metrics["final_epoch"]["epoch"] == 30
    assert metrics["best_epoch_selected_on_test_split"]["epoch"] == 30
    assert metrics["final_epoch"]["leader_accuracy"] == written["final_epoch"]["leader_accuracy"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def group():
    """Three DML students: the progress shows their mean accuracy, the number DML reports."""
    keras.utils.set_random_seed(0)
    students = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=3, method="dml",
                                    sharing="network", image_shape=(32, 32, 3))
    students.compile(optimizer=okddip_tf.CoupledSGD(0.01))
    return students


def small_data(num=24):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, size=(num, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=num).astype(np.int32))


@pytest.mark.parametrize("columns", [200, 60])
def test_on_a_terminal_one_line_is_redrawn_within_its_width(group, monkeypatch, columns):
    monkeypatch.setattr(progress.shutil, "get_terminal_size",
                        lambda fallback=None: os.terminal_size((columns, 24)))
    monkeypatch.setattr(progress.time, "monotonic", iter(np.arange(0, 1000, 0.5)).__next__)
    images, labels = small_data()
    screen = Terminal()
    group.fit(images, labels, batch_size=4, epochs=2, validation_data=(images[:8], labels[:8]),
              verbose=1, callbacks=[progress.ProgressLine(stream=screen)])
    text = screen.getvalue()
    drawn = re.split(r"[\r\n]", text)
    assert max(len(line) for line in drawn) <= min(progress.WIDTH, columns - 1)
    assert sum("Epoch 1/2 " in line and "/6 [" in line for line in drawn) >= 5  # redrawn a step
    # What stays on the screen: each epoch's line (wrapped on a narrow terminal).
    kept = [line.rsplit("\r", 1)[-1] for line in text.split("\n")[:-1]]
    assert text.endswith("\n")
    assert [line.split(" - ")[0] for line in kept if not line.startswith("    ")] == [
        "Epoch 1/2", "Epoch 2/2"]
    assert len(kept) == (2 if columns > progress.WIDTH else 4)


def test_group_fit_shows_the_short_progress_unless_verbose_is_given(group, capsys):
    images, labels = small_data(8)
    group.fit(images, labels, batch_size=4, epochs=1)
    out = capsys.readouterr().out
    assert "student_accuracy: " in out and "leader_accuracy" not in out
    assert "student_kd" not in out
    assert max(len(line) for line in re.split(r"[\r\n]", out)) <= progress.WIDTH
    group.fit(images, labels, batch_size=4, epochs=1, verbose=2)  # Keras' own, as asked
    assert "student_kd" in capsys.readouterr().out


def test_summary_lines_fit_a_terminal_line():
    history = {"loss": [2.0, 1.0], "val_student_accuracy": [0.1, 0.2],
               "val_student_ensemble_accuracy": [0.15, 0.25]}
    method = okddip_tf.methods.create_method("dml", None)
    text = train.format_summary(train.summarize(history, method))
    assert "final (epoch 2)" in text and "best (epoch 2)*" in text
    assert max(len(line) for line in text.splitlines()) <= progress.WIDTH
    assert "`okddip export` deploys the last student" in " ".join(text.split())


def test_a_search_shows_the_same_short_progress(tfds_data_dir, tmp_path, capsys):
    from okddip_tf import config as base
    from okddip_tf import tuner

    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir, config.tuner.max_trials, config.train.verbose = tfds_data_dir, 1, 2
    tuner.search(config, str(tmp_path))
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("Epoch 1/1 - ")]
    assert len(epoch_lines) == 1 and " - leader_accuracy: " in epoch_lines[0]
    assert "peer_kd" not in out  # Keras' bar of every logged value is not printed
