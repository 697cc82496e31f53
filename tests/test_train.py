"""Configs, train_and_evaluate on real CIFAR-100 data, and the `okddip` command line."""

import importlib.util
import json
import math
import pathlib

import pytest

from okddip_tf import config as base
from okddip_tf import train
from okddip_tf.callbacks import rampup_weight

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO_ROOT / "configs").glob("*.py"))


def load_config_file(path, arg=None):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def flat_keys(config):
    return set(config.to_dict().keys()) | {
        f"{section}.{key}" for section, sub in config.to_dict().items() for key in sub
    }


def test_config_files_exist():
    names = {path.stem for path in CONFIG_FILES}
    assert {"quickstart", "cifar100_resnet32_okddip", "cifar10_resnet32_okddip",
            "cifar100_resnet32_baseline", "cifar100_resnet32_independent"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_config_loads_validates_and_declares_no_new_keys(path, arg):
    config = load_config_file(path, arg)
    base.validate_config(config)
    assert flat_keys(config) == flat_keys(base.get_base_config())


def test_paper_recipe_config_matches_the_paper():
    config = load_config_file(REPO_ROOT / "configs" / "cifar100_resnet32_okddip.py")
    assert (config.model.backbone, config.model.num_students, config.model.temperature) == (
        "resnet32", 4, 3.0)
    assert (config.optim.learning_rate, config.optim.momentum, config.optim.nesterov) == (
        0.1, 0.9, True)
    assert tuple(config.optim.drop_epochs) == (150, 225) and config.train.epochs == 300
    assert config.data.batch_size == 128 and config.optim.l2 == 5e-4
    assert config.rampup.length == 80 and not config.okddip.detach_targets


def test_imagenet_recipe_config_matches_the_paper():
    config = load_config_file(REPO_ROOT / "configs" / "imagenet_resnet34.py")
    assert (config.model.backbone, config.data.pipeline, config.data.image_size) == (
        "resnet34_imagenet", "imagenet", 224)
    assert config.data.batch_size == 256 and config.optim.l2 == 1e-4
    assert tuple(config.optim.drop_epochs) == (30, 60) and config.train.epochs == 90
    assert (config.optim.learning_rate, config.optim.momentum, config.optim.nesterov) == (
        0.1, 0.9, True)


def test_unknown_config_argument_is_rejected():
    with pytest.raises(ValueError, match="Unknown config argument 'smok'"):
        load_config_file(REPO_ROOT / "configs" / "cifar100_resnet32_okddip.py", "smok")


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "epochs", 0, "train.epochs must be >= 1"),
    ("data", "batch_size", 0, "data.batch_size must be >= 1"),
    ("optim", "drop_epochs", (225, 150), "drop_epochs must be increasing"),
    ("model", "temperature", 0.0, "temperature must be > 0"),
    ("rampup", "length", -1, "rampup.length must be >= 0"),
])
def test_validate_config_rejects_bad_values(section, key, value, message):
    config = base.get_base_config()
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        base.validate_config(config)


def test_two_epoch_fit_on_real_cifar100_writes_a_complete_workdir(tfds_data_dir, tmp_path):
    """The tiny group on a real CIFAR-100 subset: every history key present and finite."""
    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir = tfds_data_dir
    config.train.verbose = 0
    group, history, metrics = train.train_and_evaluate(config, str(tmp_path))

    expected = {"loss", "peer_ce", "leader_ce", "peer_kd", "leader_kd", "distill_weight",
                "leader_accuracy", "peer_accuracy", "ensemble_accuracy",
                "ensemble_prob_accuracy", "diversity", "student_accuracy",
                "student_ensemble_accuracy", "student_diversity", "peer_0_accuracy",
                "peer_1_accuracy", "peer_2_accuracy"}
    assert set(history) == expected | {f"val_{key}" for key in expected}
    for key, values in history.items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), key
    # The ramp-up callback really drove the weight the compiled step used (L = 2 epochs).
    assert history["distill_weight"] == pytest.approx(
        [rampup_weight(e, 2) for e in range(2)], rel=1e-6)

    for name in ("config.json", "dataset_info.json", "history.json", "metrics.json",
                 "checkpoints/last.keras"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard" / "okddip").iterdir())
    written = json.loads((tmp_path / "history.json").read_text())
    assert written.keys() == history.keys()
    for key, values in history.items():
        assert written[key] == pytest.approx(values), key
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["num_classes"] == 100 and info["num_eval_examples"] == 128

    final = metrics["final_epoch"]
    assert final["leader_accuracy"] == history["val_leader_accuracy"][-1]
    # OKDDip's number is its leader's; every student, ensemble and diversity is reported too.
    assert final["method_accuracy"] == final["leader_accuracy"]
    assert metrics["reporting"]["method_accuracy"] == "leader_accuracy"
    assert set(final) == {"epoch", "method_accuracy", "leader_accuracy", "peer_accuracy",
                          "ensemble_accuracy", "student_accuracy", "student_ensemble_accuracy",
                          "diversity", "student_diversity", "peer_0_accuracy", "peer_1_accuracy",
                          "peer_2_accuracy"}
    best = metrics["best_epoch_selected_on_test_split"]
    assert best["leader_accuracy"] == max(history["val_leader_accuracy"])
    assert best["method_accuracy"] == best["leader_accuracy"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    # checkpoints/best.keras holds that same best epoch (kd.teacher_checkpoint="best").
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["best"]["monitor"] == "val_leader_accuracy"
    assert state["best"]["epochs_done"] == best["epoch"]  # both count from 1
    assert state["best"]["value"] == pytest.approx(best["leader_accuracy"])
    assert (tmp_path / "checkpoints" / "best.keras").is_file()



def test_cli_train_smoke_run(tfds_data_dir, tmp_path, run_cli):
    result = run_cli("train", "--config=configs/cifar100_resnet32_okddip.py:smoke",
                     f"--workdir={tmp_path}", f"--config.data.data_dir={tfds_data_dir}",
                     "--config.model.temperature=4.0")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["final_epoch"]["leader_accuracy"] <= 1.0
    assert json.loads((tmp_path / "config.json").read_text())["model"]["temperature"] == 4.0
    assert "leader_accuracy" in result.stdout and "selected on the test split" in result.stdout


def test_a_run_can_end_by_exporting_its_leader(tfds_data_dir, tmp_path, capsys):
    """What the quickstart does: train, then write the deployable leader."""
    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir = tfds_data_dir
    config.train.verbose, config.train.epochs = 0, 1
    config.export.after_training = True
    train.train_and_evaluate(config, str(tmp_path))
    version = tmp_path / "export" / "leader" / "1"
    assert (version / "saved_model.pb").is_file()
    report = json.loads((version / "export_report.json").read_text())
    assert report["parameters"]["leader"] == report["parameters"]["single_network"]
    assert "Exported the leader to" in capsys.readouterr().out


def test_quickstart_ends_by_exporting():
    config = load_config_file(REPO_ROOT / "configs" / "quickstart.py")
    assert config.export.after_training
