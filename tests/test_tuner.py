"""`okddip tune`: a real 2-trial search on the tiny backbone, resuming it, and its checks."""

import copy
import importlib.util
import json
import math
import pathlib
import types

import keras
import pytest

from okddip_tf import config as base
from okddip_tf import tuner
from okddip_tf.callbacks import rampup_weight

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke_config(data_dir=None):
    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir = data_dir
    return config


def trial_dirs(workdir):
    return sorted(p.name for p in (pathlib.Path(workdir) / tuner.PROJECT).glob("trial_*"))


def as_float(value):
    return float(keras.ops.convert_to_numpy(value))


@pytest.fixture(scope="module")
def searched(tfds_data_dir, tmp_path_factory):
    """A 2-trial RandomSearch over real CIFAR-100 subsets, recording what each trial's model got."""
    config = smoke_config(tfds_data_dir)
    workdir = str(tmp_path_factory.mktemp("search"))
    records = []
    original_fit = tuner.OKDDipHyperModel.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        record = {
            "hp": dict(hp.values),
            "temperature": model.temperature,
            "num_students": model.num_students,
            "heads": len(model.heads),
            "attention_dim": model.method.attention_dim,
            "query_units": model.attention.query.kernel.shape[-1],
            "learning_rate": as_float(model.optimizer.learning_rate),
        }
        history = original_fit(self, hp, model, *args, **kwargs)
        record["distill_weight"] = as_float(model.distill_weight)
        record["history"] = history.history
        records.append(record)
        return history

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuner.OKDDipHyperModel, "fit", recording_fit)
        result = tuner.search(config, workdir)
    return types.SimpleNamespace(config=config, workdir=workdir, result=result, records=records)


def test_two_trial_search_finishes_every_trial_with_a_finite_score(searched):
    oracle = searched.result.tuner.oracle
    assert trial_dirs(searched.workdir) == ["trial_0", "trial_1"]
    assert len(searched.records) == 2
    for trial in oracle.trials.values():
        assert trial.status == "COMPLETED", trial.message
        assert math.isfinite(trial.score) and 0.0 <= trial.score <= 1.0
        assert trial.metrics.exists("val_leader_accuracy")
    best = oracle.get_best_trials(1)[0]
    assert searched.result.best_trial_id == best.trial_id
    assert searched.result.best_score == best.score
    # The summary: a header, a rule and one row per trial, best first.
    lines = searched.result.table.splitlines()
    assert "val_leader_accuracy" in lines[0] and "temperature" in lines[0]
    assert len(lines) == 4 and lines[2].split()[0] == best.trial_id


def test_each_trial_model_gets_its_hyperparameters(searched):
    for record in searched.records:
        hp = record["hp"]
        assert record["temperature"] == pytest.approx(hp["temperature"])
        assert record["num_students"] == record["heads"] == hp["num_students"]
        assert record["attention_dim"] == record["query_units"] == hp["attention_dim"]
        assert record["learning_rate"] == pytest.approx(hp["learning_rate"], rel=1e-6)
        # The ramp-up callback ran with the trial's length (one epoch: epoch 0's weight).
        expected = rampup_weight(0, hp["rampup_length"])
        assert record["distill_weight"] == pytest.approx(expected, rel=1e-5)
        assert record["history"]["distill_weight"][0] == pytest.approx(expected, rel=1e-5)
    best_values = searched.result.best_values
    model = searched.result.tuner.get_best_models(1)[0]  # rebuilt, with the trial's weights
    assert model.temperature == pytest.approx(best_values["temperature"])
    assert model.num_students == best_values["num_students"]
    assert model.method.attention_dim == best_values["attention_dim"]


def load_config_file(path, arg=None):
    spec = importlib.util.spec_from_file_location("best_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_best_config_is_a_train_config_with_the_best_values(searched):
    path = pathlib.Path(searched.workdir) / tuner.BEST_CONFIG
    assert searched.result.best_config_path == str(path)
    config = load_config_file(path)
    base.validate_config(config)
    best = searched.result.tuner.oracle.get_best_trials(1)[0].hyperparameters.values
    assert config.model.temperature == best["temperature"]
    assert config.optim.learning_rate == best["learning_rate"]
    assert config.rampup.length == best["rampup_length"]
    assert config.model.num_students == best["num_students"]
    assert config.okddip.attention_dim == best["attention_dim"]
    # Everything else is the search config's, with its full run and its own splits.
    expected = tuner.with_values(searched.config, searched.result.best_values)
    assert config.to_dict() == expected.to_dict()
    assert config.train.epochs == searched.config.train.epochs
    assert (config.data.train_split, config.data.eval_split) == ("train", "test")
    assert load_config_file(path, "smoke").model.backbone == "tiny"

    written = json.loads((pathlib.Path(searched.workdir) / tuner.BEST_HYPERPARAMETERS).read_text())
    assert written["hyperparameters"] == searched.result.best_values
    assert written["trial_id"] == searched.result.best_trial_id
    assert written["objective"] == "val_leader_accuracy" and written["direction"] == "max"


def test_rerunning_a_finished_search_trains_nothing(searched, monkeypatch):
    calls = []

    def no_training(self, hp, model, *args, **kwargs):
        calls.append(dict(hp.values))  # KerasTuner would swallow an exception raised here
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(tuner.OKDDipHyperModel, "fit", no_training)
    config = copy.deepcopy(searched.config)
    config.train.verbose = 0  # a resumable change
    result = tuner.search(config, searched.workdir)
    assert calls == []
    assert trial_dirs(searched.workdir) == ["trial_0", "trial_1"]
    assert all(t.status == "COMPLETED" for t in result.tuner.oracle.trials.values())
    assert result.best_trial_id == searched.result.best_trial_id
    assert result.best_values == searched.result.best_values


def test_a_search_with_another_config_is_not_resumed(searched):
    config = copy.deepcopy(searched.config)
    config.tuner.temperature = (2.0, 3.0)
    with pytest.raises(ValueError, match=r"different config \(tuner.temperature"):
        tuner.search(config, searched.workdir)


def test_misspelled_objective_fails_fast_naming_the_valid_metrics(tmp_path):
    config = smoke_config()
    config.tuner.objective = "val_leader_acc"
    with pytest.raises(ValueError) as error:
        tuner.search(config, str(tmp_path))
    message = str(error.value)
    assert "'val_leader_acc'" in message and "Did you mean" in message
    assert "'val_leader_accuracy'" in message
    assert "val_ensemble_accuracy" in message and "peer_kd" in message
    assert not (tmp_path / tuner.PROJECT).exists()


def test_objective_must_be_logged_for_every_group_size():
    config = smoke_config()
    config.tuner.objective = "val_diversity"  # needs >= 2 peers: not logged with 2 students
    with pytest.raises(ValueError, match="val_diversity"):
        tuner.make_objective(config, tuner.search_space(config))
    config.tuner.num_students = (3, 4)
    objective = tuner.make_objective(config, tuner.search_space(config))
    assert (objective.name, objective.direction) == ("val_diversity", "max")
    config.tuner.objective = "val_loss"
    assert tuner.make_objective(config, tuner.search_space(config)).direction == "min"


def test_unknown_algorithm_fails_with_the_list(tmp_path):
    config = smoke_config()
    config.tuner.algorithm = "grid"
    with pytest.raises(ValueError, match="'grid'.*random, hyperband, bayesian"):
        tuner.search(config, str(tmp_path))


@pytest.mark.parametrize("name,values,message", [
    ("temperature", (0.0, 2.0), "temperature must be > 0"),
    ("temperature", (4.0, 2.0), r"range \(low, high\)"),
    ("learning_rate", (0.1,), r"range \(low, high\)"),
    ("rampup_length", (2.5, 10), "integer choices"),
    ("rampup_length", (-1, 10), "rampup.length must be >= 0"),
    ("num_students", (1, 2), "between 2 and 8"),
    ("attention_dim", ("8",), "must be numbers"),
])
def test_bad_search_space_fails_saying_the_fix(name, values, message):
    config = smoke_config()
    config.tuner[name] = values
    with pytest.raises(ValueError, match=message):
        tuner.search_space(config)


def test_search_space_skips_what_the_method_does_not_use():
    config = smoke_config()
    config.tuner.kd_alpha = (0.5, 2.0)  # KD's knob: not OKDDip's
    assert [dim.name for dim in tuner.search_space(config)] == [
        "temperature", "learning_rate", "rampup_length", "num_students", "attention_dim"]
    config.model.method, config.model.num_students = "kd", 1
    assert [dim.name for dim in tuner.search_space(config)] == [
        "temperature", "learning_rate", "kd_alpha"]
    config.model.method, config.model.num_students = "dml", 4
    assert [dim.name for dim in tuner.search_space(config)] == [
        "temperature", "learning_rate", "num_students"]
    config.model.method = "independent"
    assert [dim.name for dim in tuner.search_space(config)] == ["learning_rate", "num_students"]
    config.model.method = "baseline"
    config.model.num_students = 1
    assert [dim.name for dim in tuner.search_space(config)] == ["learning_rate"]
    config.tuner.learning_rate = ()
    assert tuner.search_space(config) == []



def test_cli_tune_reports_a_config_it_cannot_run(tmp_path, run_cli):
    result = run_cli("tune", "--config=configs/cifar100_resnet32_tune.py:smoke",
                     f"--workdir={tmp_path / 'search'}", "--config.tuner.algorithm=grid")
    assert result.returncode != 0
    assert "okddip tune: Unknown tuner.algorithm 'grid'" in result.stderr
    assert not (tmp_path / "search").exists()


@pytest.mark.slow
def test_cli_tune_smoke_run_writes_a_config_that_trains(tfds_data_dir, tmp_path, run_cli):
    search_dir, train_dir = tmp_path / "search", tmp_path / "train"
    result = run_cli("tune", "--config=configs/cifar100_resnet32_tune.py:smoke",
                     f"--workdir={search_dir}", f"--config.data.data_dir={tfds_data_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best first" in result.stdout and "okddip train --config=" in result.stdout
    assert trial_dirs(search_dir) == ["trial_0", "trial_1"]
    result = run_cli("train", f"--config={search_dir / tuner.BEST_CONFIG}",
                     f"--workdir={train_dir}", "--config.train.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((search_dir / tuner.BEST_HYPERPARAMETERS).read_text())["hyperparameters"]
    trained = json.loads((train_dir / "config.json").read_text())
    assert trained["model"]["temperature"] == best["temperature"]
    assert trained["model"]["num_students"] == best["num_students"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["hyperband", "bayesian"])
def test_other_algorithms_run_a_tiny_search(algorithm, tfds_data_dir, tmp_path):
    if algorithm == "bayesian":
        pytest.importorskip("sklearn")
    config = smoke_config(tfds_data_dir)
    config.tuner.algorithm = algorithm
    config.tuner.epochs = 2  # hyperband: trials of 1 and 2 epochs
    config.train.verbose = 0
    result = tuner.search(config, str(tmp_path))
    assert math.isfinite(result.best_score)
    assert (tmp_path / tuner.BEST_CONFIG).exists()


def test_a_kd_search_tunes_its_own_knob(tfds_data_dir, tmp_path):
    """A method other than OKDDip searches its own knob (KD's alpha), not OKDDip's."""
    config = base.paper_config("cifar100", "kd", "smoke")
    config.data.data_dir = tfds_data_dir
    config.kd.teacher = str(REPO_ROOT / "tests" / "fixtures" / "legacy_okddip_tiny")
    config.tuner.kd_alpha = (0.1, 4.0)
    config.tuner.temperature = config.tuner.learning_rate = ()
    config.tuner.objective = "val_leader_accuracy"
    config.train.verbose = 0
    seen = []
    original_fit = tuner.OKDDipHyperModel.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        seen.append((dict(hp.values), model.method.options["alpha"], model.method_name))
        return original_fit(self, hp, model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuner.OKDDipHyperModel, "fit", recording_fit)
        result = tuner.search(config, str(tmp_path))
    assert len(seen) == 2 and math.isfinite(result.best_score)
    for values, alpha, method in seen:
        assert set(values) == {"kd_alpha"} and method == "kd"
        assert alpha == pytest.approx(values["kd_alpha"]) and 0.1 <= alpha <= 4.0
    assert seen[0][1] != seen[1][1]
    best = load_config_file(tmp_path / tuner.BEST_CONFIG)
    assert best.kd.alpha == pytest.approx(result.best_values["kd_alpha"])


def one_trial(config):
    config.tuner.max_trials = 1
    config.tuner.temperature = config.tuner.rampup_length = config.tuner.attention_dim = ()
    config.tuner.learning_rate = (0.01, 0.05)
    config.train.verbose = 0
    return config


def test_a_search_reads_the_npz_source_as_training_does(cifar100_npz, tmp_path):
    """`okddip tune` loads its data through `okddip train`'s builders: the npz source works."""
    config = one_trial(smoke_config())
    config.data.source, config.data.path = "npz", cifar100_npz
    config.tuner.train_split = config.tuner.eval_split = ""  # the file's train and test splits
    loaded = []
    original = tuner.builders.load_data

    def recording_load(data_config, **kwargs):
        loaded.append(dict(data_config))
        return original(data_config, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuner.builders, "load_data", recording_load)
        result = tuner.search(config, str(tmp_path))
    assert [entry["source"] for entry in loaded] == ["npz"]
    assert math.isfinite(result.best_score) and len(trial_dirs(tmp_path)) == 1


def test_a_search_runs_under_the_mirrored_strategy(tfds_data_dir, tmp_path):
    """train.strategy reaches the trials: each trial's group is built in the strategy's scope."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    config = one_trial(smoke_config(tfds_data_dir))
    config.train.strategy = "mirrored"
    strategies = []
    original_fit = tuner.OKDDipHyperModel.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        strategies.append(type(model.distribute_strategy).__name__)
        return original_fit(self, hp, model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuner.OKDDipHyperModel, "fit", recording_fit)
        result = tuner.search(config, str(tmp_path))
    assert strategies == [tf.distribute.MirroredStrategy.__name__]
    assert math.isfinite(result.best_score)
