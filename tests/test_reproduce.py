"""`okddip reproduce`: the manifest, the budget scaling, the runner's resume/skip logic, the report.

The manifest's paper numbers are checked against the reference specification's table
(../shared/reference/okddip_spec.md, section 13), every run's config against the real config
file and the methods' checks, the runner with a stand-in trainer that records what it was asked
to train, and the report against NumPy on a synthetic grid of histories. One test trains a real
(smoke-sized) cell through the command line and reruns it.
"""

import json
import os
import pathlib
import re
import shlex
import stat
import sys
import zipfile

import numpy as np
import pytest

from okddip_tf import atomic_files, checkpoint_files
from okddip_tf.config import load_config_file
from okddip_tf.reproduce import (Budget, budget as budgets, figures, machine, manifest, report,
                                  runner, statistics)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT.parent / "shared" / "reference" / "okddip_spec.md"


def all_runs():
    runs = []
    for experiment in manifest.EXPERIMENTS.values():
        runs += [run for run in experiment.runs() if run not in runs]
    return runs


def run_config(run, budget=Budget(epochs=15, seeds=1), seed=0):
    """The config `okddip train` gets for a run: the config file, then the overrides."""
    config = load_config_file(f"configs/paper.py:{run.config_arg}")
    overrides = {**dict(run.options), **budget.overrides(seed, run.schedule)}
    with config.unlocked():
        for key, value in overrides.items():
            section, name = key.split(".")
            assert name in config[section], f"{run.id}: the config has no key {key}"
            config[section][name] = value
    return config


# --- the manifest ------------------------------------------------------------------------------

def spec_targets():
    """Section 13 of the reference spec: {dataset: {column: error}} and the bullet lines."""
    if not SPEC.is_file():
        pytest.fail(f"{SPEC} is missing: the paper's targets are checked against it (CI keeps "
                    "../shared beside the checkout).")
    text = SPEC.read_text(encoding="utf-8").split("## 13.")[1]
    header = [cell.strip() for cell in re.search(r"\| setting \|(.*)\|", text).group(1)
              .split("|")]
    rows = {}
    for dataset in ("CIFAR-10", "CIFAR-100"):
        values = re.search(rf"\| {dataset} \|(.*)\|", text).group(1).split("|")
        rows[dataset] = dict(zip(header, (float(v) for v in values)))
    return rows, text


def cell(experiment, row, column):
    found = [c for c in manifest.EXPERIMENTS[experiment].cells
             if c.row == row and c.column == column]
    assert len(found) == 1, (experiment, row, column)
    return found[0]


def test_paper_numbers_match_the_reference_spec():
    rows, text = spec_targets()
    names = {"Baseline": "Baseline", "Ind": "Ind", "DML": "DML", "CL-ILR": "CL-ILR",
             "ONE": "ONE", "OKDDip network-based": "OKDDip (network)",
             "OKDDip branch-based": "OKDDip (branch)"}
    for table, dataset in (("table1", "CIFAR-10"), ("table2", "CIFAR-100")):
        for spec_name, column in names.items():
            assert cell(table, "ResNet-32", column).paper[0] == rows[dataset][spec_name]
    # "Table 5, ResNet-32 on CIFAR-100: random 28.24, entropy 26.71, ..."
    line = re.search(r"Table 5.*", text).group(0)
    for word, column in (("random", "w/o SA (random)"), ("entropy", "w/o SA (entropy)"),
                         ("mean", "w/o SA (mean)"), ("asymmetry", "w/o SA (asymmetry)"),
                         ("w/o two-level", "w/o two-level"), ("full", "OKDDip")):
        value = float(re.search(rf"{re.escape(word)} (\d+\.\d+)", line).group(1))
        assert cell("table5", "ResNet-32", column).paper[0] == value
    # "Table 4 ... ResNet-32: 27.01 / 24.90 / 23.45 / 23.74" (CL-ILR / ONE / OKDDip / Ind)
    for row in ("ResNet-32", "VGG-16", "ResNet-110"):
        values = re.search(rf"  - {row}: ([\d./ ]+)", text).group(1).strip().split(" / ")
        for column, value in zip(("CL-ILR", "ONE", "OKDDip", "Ind"), values):
            assert cell("table4", row, column).paper[0] == float(value)
    # "- KD: 6.08 / 26.51", "- OKDDip+KD: 5.36 / 24.92", "- Teacher ResNet-110: 5.27 / 24.12"
    for label, column in (("KD", "KD"), ("OKDDip\\+KD", "OKDDip+KD"),
                          ("Teacher ResNet-110", "Teacher")):
        ten, hundred = re.search(rf"  - {label}: ([\d.]+) / ([\d.]+)", text).groups()
        assert cell("table6", "CIFAR-10", column).paper[0] == float(ten)
        assert cell("table6", "CIFAR-100", column).paper[0] == float(hundred)
    # "Table 3, ImageNet ResNet-34: Baseline 26.76, DML 26.03, ..., OKDDip 25.42
    # (network-based) / 25.60 (branch-based)."
    line = re.search(r"Table 3.*", text).group(0)
    for word, column in (("Baseline", "Baseline"), ("DML", "DML"), ("CL-ILR", "CL-ILR"),
                         ("ONE", "ONE"), ("OKDDip", "OKDDip (network)")):
        value = float(re.search(rf"{re.escape(word)} (\d+\.\d+)", line).group(1))
        assert cell("table3", "ResNet-34", column).paper == (value, None)
    branch = float(re.search(r"/ (\d+\.\d+) \(branch-based\)", line).group(1))
    assert cell("table3", "ResNet-34", "OKDDip (branch)").paper == (branch, None)


def test_figure3_marks_table2s_four_student_points():
    for method in ("OKDDip", "ONE", "CL-ILR"):
        column = "OKDDip (branch)" if method == "OKDDip" else method
        assert (cell("figure3", method, "m=4").paper ==
                cell("table2", "ResNet-32", column).paper)
        assert cell("figure3", method, "m=6").paper is None


def test_every_cell_is_laid_out_once_and_runs_have_distinct_ids():
    for experiment in manifest.EXPERIMENTS.values():
        keys = [(c.row, c.column) for c in experiment.cells]
        assert len(keys) == len(set(keys)) == len(experiment.rows) * len(experiment.columns)
        assert {c.row for c in experiment.cells} == set(experiment.rows)
        assert {c.column for c in experiment.cells} == set(experiment.columns)
    runs = all_runs()
    assert len({run.id for run in runs}) == len(runs)


def test_experiments_share_runs_where_the_paper_reuses_them():
    table2 = set(manifest.EXPERIMENTS["table2"].runs())
    assert set(manifest.EXPERIMENTS["figure2"].runs()) <= table2
    assert cell("table5", "ResNet-32", "OKDDip").run == cell("table2", "ResNet-32",
                                                             "OKDDip (branch)").run
    assert cell("table4", "ResNet-32", "ONE").run == cell("table2", "ResNet-32", "ONE").run
    assert cell("table4", "ResNet-32", "ONE").metric == "ensemble"


def test_every_run_maps_to_a_config_the_method_accepts():
    """Every cell's config loads from configs/paper.py, takes the budget and passes the checks
    `okddip train` runs before loading data (backbone, method options, group size, sharing)."""
    from okddip_tf import preflight

    for run in all_runs():
        reason = manifest.unavailable(run)
        assert reason == "" or (run.dataset == "imagenet2012" and "not prepared" in reason)
        config = run_config(run)
        preflight.check_config(config)
        preflight.check_model(config)
        assert config.model.backbone == run.backbone and config.model.method == run.method
        assert config.data.name == run.dataset
        if not run.single:
            assert (config.model.num_students, config.model.sharing) == (run.num_students,
                                                                          run.sharing)


def test_table3_runs_the_papers_imagenet_recipe():
    """ResNet-34 on imagenet2012: the paper's ImageNet settings (batch 256, wd 1e-4, drops at
    30 and 60 of 90), its six columns with their sharing, the schedule scaled to the budget."""
    table3 = manifest.EXPERIMENTS["table3"]
    runs = {c.column: c.run for c in table3.cells}
    assert [(column, run.method, run.sharing) for column, run in runs.items()] == [
        ("Baseline", "baseline", "branch"), ("DML", "dml", "network"),
        ("CL-ILR", "cl_ilr", "branch"), ("ONE", "one", "branch"),
        ("OKDDip (network)", "okddip", "network"), ("OKDDip (branch)", "okddip", "branch")]
    for run in runs.values():
        assert (run.dataset, run.backbone, run.schedule) == (
            "imagenet2012", "resnet34_imagenet", "imagenet")
        config = run_config(run, Budget(epochs=90, seeds=1))
        assert (config.data.name, config.data.pipeline, config.data.batch_size) == (
            "imagenet2012", "imagenet", 256)
        assert config.optim.l2 == 1e-4 and tuple(config.optim.drop_epochs) == (30, 60)
        assert config.train.epochs == 90 and config.rampup.length == 24
    assert Budget(epochs=45).overrides(0, "imagenet") == {
        "train.epochs": 45, "optim.drop_epochs": (15, 30), "rampup.length": 12, "train.seed": 0}
    assert Budget(epochs=45).overrides(0) == Budget(epochs=45).overrides(0, "cifar")


def test_table3_without_imagenet_is_listed_with_what_to_prepare(tmp_path, monkeypatch):
    """On a machine without imagenet2012 prepared, `okddip reproduce --experiment=table3`
    trains nothing: every cell is 'not available' with the tfds command that prepares it."""
    import okddip_tf.reproduce as reproducing

    data_dir = tmp_path / "tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    lines = []
    results, tasks = reproducing.reproduce("table3", str(tmp_path / "grid"),
                                           Budget(epochs=2, seeds=1), echo=lines.append)
    assert len(tasks) == 6 and {task.state for task in tasks} == {"skipped"}
    for task in tasks:
        assert f"dataset 'imagenet2012' is not prepared in {data_dir}" in task.reason
        assert "ILSVRC2012_img_train.tar" in task.reason
        assert f"tfds build imagenet2012 --manual_dir=<that folder> --data_dir={data_dir}" in (
            task.reason)
    assert sum("not available: dataset 'imagenet2012' is not prepared" in line
               for line in lines) == 6
    assert not (tmp_path / "grid" / tasks[0].run.id).exists()  # nothing trained
    # The budget line and the report state the ImageNet schedule the cells would train with.
    assert "2 epochs (the paper: 90)" in lines[0] and "(0-indexed; the paper: 30 and 60)" in (
        lines[0])
    assert results["budget"]["drop_epochs"] == [1, 1] and results["budget"]["rampup_length"] == 1
    report_text = (tmp_path / "grid" / "report.md").read_text()
    assert "not available" in report_text and "26.76" in report_text
    # Prepared (tfds' layout: <data_dir>/imagenet2012/<version>/dataset_info.json): runnable.
    (data_dir / "imagenet2012" / "5.1.0").mkdir(parents=True)
    (data_dir / "imagenet2012" / "5.1.0" / "dataset_info.json").write_text("{}")
    assert manifest.unavailable(tasks[0].run) == ""


def test_table6_students_load_the_teachers_best_epoch():
    """The authors' KD loads best.pth (train_kd.py:305-314): kd.teacher_checkpoint=best."""
    for row in ("CIFAR-10", "CIFAR-100"):
        for column in ("KD", "OKDDip+KD"):
            run = cell("table6", row, column).run
            assert dict(run.options)["kd.teacher_checkpoint"] == "best"
            assert run_config(run).kd.teacher_checkpoint == "best"
            argv = runner.train_command(run, Budget(epochs=2, seeds=1), 0, "/w")
            assert "--config.kd.teacher_checkpoint=best" in argv
        assert not cell("table6", row, "Teacher").run.options


def test_vgg16_cells_train_with_the_authors_dropout():
    """0.5 in the authors' branch-based models (vgg_GL.py:20, vgg_one.py:63,66), 0.0 for the
    baseline and the network-based groups (--dropout default 0: train.py:49, train_DML.py:46,
    train_GL.py:48); set in the cell's command, not left to a default."""
    from okddip_tf import config as config_module

    vgg_runs = [run for run in all_runs() if run.backbone == "vgg16"]
    assert len(vgg_runs) == 2 * 7 + 1  # Tables 1 and 2, and Table 4's leaderless OKDDip
    for run in vgg_runs:
        want = 0.5 if run.sharing == "branch" and not run.single else 0.0
        assert dict(run.options)["model.dropout"] == want, run.id
        assert config_module.model_dropout(run_config(run).model) == want, run.id
        assert f"--config.model.dropout={want}" in runner.train_command(
            run, Budget(epochs=2, seeds=1), 0, "/w")
    by_column = {c.column: c.run for c in manifest.EXPERIMENTS["table2"].cells
                 if c.row == "VGG-16"}
    assert dict(by_column["Baseline"].options)["model.dropout"] == 0.0
    assert dict(by_column["DML"].options)["model.dropout"] == 0.0
    assert dict(by_column["OKDDip (network)"].options)["model.dropout"] == 0.0
    assert dict(by_column["OKDDip (branch)"].options)["model.dropout"] == 0.5
    assert dict(by_column["ONE"].options)["model.dropout"] == 0.5


@pytest.mark.parametrize("run_id", [
    "cifar100_vgg16_one_branch_dropout-0.5", "cifar100_densenet40_12_cl_ilr_branch",
    "cifar100_wrn20_8_bottleneck_okddip_network", "cifar100_resnet32_okddip_branch_m8",
    "cifar100_resnet32_okddip_branch_two_level-False"])
def test_cells_build_their_group(run_id):
    """A sample across architectures, methods, sizes and options builds with its paper counts
    of students; the full set is the slow test below."""
    build_and_check(next(run for run in all_runs() if run.id == run_id))


@pytest.mark.slow
def test_every_cell_builds_its_group():
    for run in all_runs():
        build_and_check(run)


def build_and_check(run):
    import keras

    from okddip_tf import builders, methods
    from okddip_tf.data.info import DatasetInfo

    config = run_config(run)
    classes = 10 if run.dataset == "cifar10" else 100
    info = DatasetInfo(name=run.dataset, num_classes=classes, image_shape=(32, 32, 3), pixel_mean=(0.5,) * 3,
                       pixel_std=(0.25,) * 3, num_train_examples=50000, num_eval_examples=10000,
                       class_names=[str(i) for i in range(classes)])
    options = methods.options_from_config(config)
    if run.teacher is not None:  # a stand-in teacher of the right class count
        teacher = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                    keras.layers.Dense(classes)])
        options["teacher_model"] = keras.saving.serialize_keras_object(teacher)
    group = builders.build_group(config, info, builders.build_method(config, options))
    outputs = group(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert outputs["leader_logits"].shape == (2, classes)
    assert group.num_students == (1 if run.single else run.num_students)
    keras.backend.clear_session()


def test_an_unimplemented_method_or_backbone_is_listed_not_hidden(tmp_path):
    missing = manifest.Run("cifar100", "resnet32", "no_such_method")
    assert "not implemented" in manifest.unavailable(missing)
    experiment = manifest.Experiment("t", "t", "table", ("R",), ("A", "B"), (
        manifest.Cell("R", "A", missing, (20.0, 0.1)),
        manifest.Cell("R", "B", manifest.Run("cifar100", "no_such_net", "okddip"), (19.0, 0.1))))
    results = report.collect(experiment, str(tmp_path), Budget(epochs=2, seeds=1))
    assert [c["state"] for c in results["cells"]] == [
        "not available: method 'no_such_method' is not implemented",
        "not available: backbone 'no_such_net' is not implemented"]
    text = report.markdown(results)
    assert "n/a (paper 20.00)" in text and "not available: backbone" in text


def test_only_selects_cells_by_any_of_their_words():
    table2 = manifest.EXPERIMENTS["table2"]
    row = manifest.select(table2, "resnet32")
    assert {c.row for c in row} == {"ResNet-32"} and len(row) == 7
    two = manifest.select(table2,
                          "cifar100_resnet32_baseline, cifar100_vgg16_dml_network_dropout-0.0")
    assert [(c.row, c.column) for c in two] == [("ResNet-32", "Baseline"), ("VGG-16", "DML")]
    assert {c.column for c in manifest.select(table2, "ONE")} == {"ONE"}
    assert manifest.select(table2, "nothing") == ()
    assert manifest.select(table2, None) == table2.cells


# --- the budget --------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs, drops, rampup", [
    (300, (150, 225), 80), (15, (8, 11), 4), (60, (30, 45), 16), (30, (15, 23), 8),
    (1, (1, 1), 0), (150, (75, 113), 40)])
def test_budget_scales_the_papers_schedule(epochs, drops, rampup):
    budget = Budget(epochs=epochs)
    assert budget.drop_epochs == drops and budget.rampup_length == rampup
    # The same fractions of training as the paper's, to half an epoch.
    for drop, paper in zip(drops, budgets.PAPER_DROPS):
        assert abs(drop / epochs - paper / 300) <= 0.5 / epochs + 1e-12
    assert abs(rampup / epochs - 80 / 300) <= 0.5 / epochs + 1e-12


def test_budget_overrides_reach_the_config_and_describe_themselves():
    budget = Budget(epochs=15, seeds=2, train_examples=5000)
    config = run_config(manifest.Run("cifar100", "resnet32", "okddip"), budget, seed=1)
    assert config.train.epochs == 15 and tuple(config.optim.drop_epochs) == (8, 11)
    assert config.rampup.length == 4 and config.train.seed == 1
    assert config.data.train_examples == 5000
    text = budget.describe()
    assert text.startswith("15 epochs (the paper: 300)") and "5,000 training images" in text
    assert "2 seeds (the paper: 3)" in text
    assert Budget().overrides(0) == {"train.epochs": 300, "optim.drop_epochs": (150, 225),
                                     "rampup.length": 80, "train.seed": 0}


def test_budget_without_epochs_is_two_for_a_smoke_run_and_the_papers_otherwise():
    assert Budget().epochs == 300 and Budget(seeds=1).drop_epochs == (150, 225)
    smoke = Budget(smoke=True)
    assert smoke.epochs == 2 and smoke.drop_epochs == (1, 2) and smoke.overrides(0)[
        "train.epochs"] == 2
    assert smoke.describe().startswith("2 epochs (the paper: 300)")
    assert Budget(epochs=5, smoke=True).epochs == 5 and Budget(epochs=7).epochs == 7


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "--epochs must be >= 1"), ({"seeds": 0}, "--seeds must be >= 1"),
    ({"train_examples": 0}, "--train_examples must be >= 1"),
    ({"seeds": 3, "train_seeds": (1, 3)}, r"seed\(s\) \[3\] outside 0 .. 2")])
def test_budget_refuses_impossible_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Budget(**kwargs)


def test_train_seeds_plan_only_those_seeds_in_order(tmp_path):
    runs = [manifest.Run("cifar100", "resnet32", "baseline"),
            manifest.Run("cifar100", "resnet32", "okddip")]
    tasks = runner.plan(runs, Budget(epochs=2, seeds=3, train_seeds=(1, 2)), str(tmp_path))
    assert [(task.run.method, task.seed) for task in tasks] == [
        ("baseline", 1), ("okddip", 1), ("baseline", 2), ("okddip", 2)]
    assert tasks[0].directory.endswith("seed1")
    everything = runner.plan(runs, Budget(epochs=2, seeds=2), str(tmp_path))
    assert [task.seed for task in everything] == [0, 0, 1, 1]


@pytest.mark.parametrize("kwargs, count", [
    ({"seeds": 3}, "1 run x 3 seeds = 3 trainings"),
    ({"seeds": 3, "train_seeds": (1, 2)}, "1 run x 2 seeds (1, 2 of 0 .. 2) = 2 trainings")])
def test_the_starting_line_counts_the_seeds_it_trains(tmp_path, kwargs, count):
    import okddip_tf.reproduce as reproducing

    lines = []
    reproducing.reproduce("table2", str(tmp_path), Budget(epochs=2, **kwargs),
                          only="cifar100_resnet32_baseline", report_only=True, echo=lines.append)
    assert f"table2: 1 of 35 cells, {count} in {tmp_path}." in lines[0]


# --- the runner --------------------------------------------------------------------------------

FAKE_TRAINER = '''\
#!{python}
"""Stands in for `python -m okddip_tf.cli train`: records the call, writes a finished run."""
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
workdir, epochs = args["workdir"], int(args["config.train.epochs"])
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if os.path.basename(os.path.dirname(workdir)) in os.environ.get("FAKE_FAIL", "").split(","):
    print("okddip train: the data is gone. Point TFDS_DATA_DIR at it.")
    sys.exit(1)
os.makedirs(workdir, exist_ok=True)
history = {{"loss": [1.0] * epochs, "val_leader_accuracy": [0.5] * epochs}}
json.dump(history, open(os.path.join(workdir, "history.json"), "w"))
json.dump({{"epochs": epochs, "reporting": {{"method_accuracy": "leader_accuracy",
           "ensemble": None}}}}, open(os.path.join(workdir, "metrics.json"), "w"))
json.dump({{"epoch_seconds": [2.0] * epochs}}, open(os.path.join(workdir, "timing.json"), "w"))
'''


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_TRAINER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))

    def trained():
        if not calls.exists():
            return []
        lines = [json.loads(line) for line in calls.read_text().splitlines()]
        return [next(a for a in argv if a.startswith("--workdir=")).split("=", 1)[1]
                for argv in lines]

    return str(path), trained


def write_run(directory, accuracies, key="leader_accuracy", ensemble=None, extra=None):
    """A finished (or, with fewer epochs than the budget, partial) run's files."""
    history = {"loss": [1.0] * len(accuracies), f"val_{key}": list(accuracies), **(extra or {})}
    if ensemble is not None:
        history["val_student_ensemble_accuracy"] = list(ensemble)
    atomic_files.write_json(os.path.join(directory, "history.json"), history)
    atomic_files.write_json(os.path.join(directory, "metrics.json"), {
        "epochs": len(accuracies),
        "reporting": {"method_accuracy": key,
                      "ensemble": "student_ensemble_accuracy" if ensemble else None}})
    atomic_files.write_json(os.path.join(directory, "timing.json"),
                        {"epoch_seconds": [10.0] * len(accuracies)})


def table6_tasks(workdir, budget):
    experiment = manifest.EXPERIMENTS["table6"]
    selected = manifest.select(experiment, "cifar100")
    runs = [run for run in experiment.runs() if any(c.run == run for c in selected)]
    return runner.plan(runs, budget, workdir)


def test_runner_skips_finished_resumes_partial_and_trains_teachers_first(tmp_path, fake_trainer):
    executable, trained = fake_trainer
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=3, seeds=1)
    tasks = table6_tasks(workdir, budget)
    ids = [task.run.id for task in tasks]
    teacher = ids.index("cifar100_resnet110_bottleneck_baseline")
    assert teacher < ids.index("cifar100_resnet32_kd_teacher_checkpoint-best")
    assert teacher < ids.index("cifar100_resnet32_okddip_kd_branch_teacher_checkpoint-best")
    finished = runner.run_dir(workdir, manifest.Run("cifar100", "resnet32", "baseline"), 0)
    write_run(finished, [0.1, 0.2, 0.3])
    partial = runner.run_dir(workdir, manifest.Run("cifar100", "resnet32", "okddip"), 0)
    write_run(partial, [0.1])
    os.remove(os.path.join(partial, "metrics.json"))
    lines = []
    runner.Runner(tasks, budget, workdir, executable=executable, poll_seconds=0.05,
                  echo=lines.append).run()
    assert all(task.state == "finished" for task in tasks), [t.reason for t in tasks]
    launched = trained()
    assert finished not in launched and len(launched) == 4
    assert launched.index(runner.run_dir(workdir, tasks[teacher].run, 0)) == 0
    assert any("finished before; not trained again" in line for line in lines)
    assert any(line.endswith(f"resuming after epoch 1 of 3; log {partial}/train.log")
               for line in lines)
    # The KD runs are told where their teacher is; nothing asks them to train another.
    kd_log = open(os.path.join(runner.run_dir(workdir, tasks[ids.index(
        "cifar100_resnet32_kd_teacher_checkpoint-best")].run, 0), "train.log")).read()
    argv = shlex.split(kd_log.splitlines()[0])
    teacher_dir = os.path.abspath(runner.run_dir(workdir, tasks[teacher].run, 0))
    assert f"--config.kd.teacher={teacher_dir}" in argv and "--config.kd.teacher_config=" in argv
    # A second pass trains nothing.
    again = table6_tasks(workdir, budget)
    runner.Runner(again, budget, workdir, executable=executable, poll_seconds=0.05,
                  echo=lines.append).run()
    assert len(trained()) == 4


def test_each_sitting_records_its_cpu_and_the_report_counts_epochs_per_cpu(tmp_path,
                                                                           fake_trainer,
                                                                           monkeypatch):
    executable, _ = fake_trainer
    monkeypatch.setattr(machine, "gpu_names", lambda: [])  # a CPU-only machine
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=3, seeds=1)
    run = manifest.Run("cifar100", "resnet32", "baseline")
    directory = runner.run_dir(workdir, run, 0)
    write_run(directory, [0.1])  # one epoch trained before sittings were recorded
    os.remove(os.path.join(directory, "metrics.json"))
    tasks = runner.plan([run], budget, workdir)
    runner.Runner(tasks, budget, workdir, executable=executable, poll_seconds=0.05,
                  echo=lambda line: None).run()
    assert tasks[0].state == "finished", tasks[0].reason
    cpu = machine.cpu_kind()
    here = f"{cpu['model_name']} ({cpu['kind']})"
    sittings = json.load(open(os.path.join(directory, runner.SITTINGS)))
    assert [s["from_epoch"] for s in sittings] == [1] and sittings[0]["cpu"] == here
    assert runner.sitting_cpus(directory, 3) == {"not recorded": 1, here: 2}
    experiment = manifest.EXPERIMENTS["table2"]
    results = report.collect(experiment, workdir, budget)
    seed = next(c for c in results["cells"] if c["run"] == run.id)["seeds"]["0"]
    assert seed["cpus"] == {"not recorded": 1, here: 2}
    text = report.markdown(results)
    line = next(line for line in text.splitlines() if line.startswith("**Epochs trained per CPU"))
    assert f"{here}: 2" in line and "not recorded: 1" in line
    # The code it trained with: this checkout's commit (with "+changes" if it has any).
    code = runner.code_version()
    assert code.split("+")[0] == machine.git_commit(str(REPO_ROOT))
    assert sittings[0]["code"] == code and seed["code"] == {"not recorded": 1, code: 2}
    line = next(line for line in text.splitlines()
                if line.startswith("**Epochs trained per okddip_tf commit"))
    assert f"{code}: 2" in line and "not recorded: 1" in line
    assert sittings[0]["gpus"] == "none" and seed["gpus"] == {"not recorded": 1, "none": 2}
    assert "**Epochs trained per GPU" not in text  # trained on CPUs alone: the CPU line says it


def test_each_sitting_records_the_gpus_its_training_sees(tmp_path, fake_trainer, monkeypatch):
    """Two cells at once (--parallel=2) each get one GPU of the two, and record that one;
    where CUDA_VISIBLE_DEVICES is set, a cell records the GPUs it names. The report counts the
    epochs per GPU."""
    executable, _ = fake_trainer
    monkeypatch.setattr(machine, "gpu_names", lambda: ["GPU zero", "GPU one"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=3, seeds=1)
    runs = [manifest.Run("cifar100", "resnet32", "baseline"),
            manifest.Run("cifar100", "resnet32", "okddip")]
    tasks = runner.plan(runs, budget, workdir)
    runner.Runner(tasks, budget, workdir, parallel=2, executable=executable, poll_seconds=0.05,
                  echo=lambda line: None).run()
    assert [task.state for task in tasks] == ["finished", "finished"]
    recorded = [json.load(open(os.path.join(task.directory, runner.SITTINGS)))[0]["gpus"]
                for task in tasks]
    assert sorted(recorded) == ["GPU one", "GPU zero"]
    text = report.markdown(report.collect(manifest.EXPERIMENTS["table2"], workdir, budget))
    line = next(line for line in text.splitlines() if line.startswith("**Epochs trained per GPU"))
    assert "GPU one: 3" in line and "GPU zero: 3" in line
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == ["GPU one"]
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["GPU zero", "GPU one"]
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert runner.visible_gpus({}) == ["GPU zero", "GPU one"]
    # GPUs named by UUID: which ones is not known here; the machine's models, each once, stand
    # for them.
    monkeypatch.setattr(machine, "gpu_names", lambda: ["NVIDIA H200"] * 8)
    assert runner.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5f2a,GPU-77b1"}) == ["NVIDIA H200"]


def test_cells_sharing_gpus_take_only_the_memory_they_use(tmp_path, monkeypatch):
    """--parallel with CUDA_VISIBLE_DEVICES set: the cells share those GPUs, so neither JAX nor
    TensorFlow may take a GPU's memory at start (a value the user set stays); with one GPU per
    cell, or one cell at a time, the environment is left alone."""
    seen = []
    monkeypatch.setattr(runner, "start_training", lambda *args: seen.append(dict(args[5])))
    task = runner.plan([manifest.Run("cifar100", "resnet32", "baseline")], Budget(epochs=1),
                       str(tmp_path))[0]

    def launched(parallel, **env):
        for key in ("CUDA_VISIBLE_DEVICES", *runner.SHARED_GPU_ENV):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        runner.Runner([task], Budget(epochs=1), str(tmp_path), parallel=parallel).launch(task, 1)
        return {key: seen[-1].get(key) for key in ("CUDA_VISIBLE_DEVICES", *runner.SHARED_GPU_ENV)}

    assert launched(4, CUDA_VISIBLE_DEVICES="0") == {
        "CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert launched(2, CUDA_VISIBLE_DEVICES="0", XLA_PYTHON_CLIENT_PREALLOCATE="true")[
        "XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    assert launched(2) == {"CUDA_VISIBLE_DEVICES": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": None,
                           "TF_FORCE_GPU_ALLOW_GROWTH": None}
    assert launched(1, CUDA_VISIBLE_DEVICES="0")["XLA_PYTHON_CLIENT_PREALLOCATE"] is None


def test_gpu_names_reads_the_drivers_files_else_nvidia_smi(tmp_path, monkeypatch):
    info = tmp_path / "information"
    info.write_text("Model: \t\t NVIDIA H200\nIRQ:   \t 42\nGPU UUID: \t GPU-1\n")
    monkeypatch.setattr(machine.glob, "glob", lambda pattern: [str(info)])
    assert machine.gpu_names() == ["NVIDIA H200"]
    monkeypatch.setattr(machine.glob, "glob", lambda pattern: [])

    class Answer:
        returncode, stdout = 0, "NVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\n"

    monkeypatch.setattr(machine.subprocess, "run", lambda *args, **kwargs: Answer())
    assert machine.gpu_names() == ["NVIDIA H100 80GB HBM3"] * 2

    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(machine.subprocess, "run", missing)
    assert machine.gpu_names() == []


def test_npz_budget_reads_every_cell_from_the_file(tmp_path):
    npz = str(tmp_path / "cifar100.npz")
    budget = Budget(epochs=15, seeds=1, npz=npz)
    config = run_config(manifest.Run("cifar100", "resnet32", "okddip"), budget)
    assert config.data.source == "npz" and config.data.path == npz
    assert config.data.name == "cifar100"  # its normalisation constants stay CIFAR-100's
    assert budget.describe().endswith("; data read from cifar100.npz (data.source=npz)")
    assert "data.source" not in Budget(epochs=15).overrides(0)


def test_npz_refuses_cells_of_two_datasets_before_training(tmp_path):
    npz = tmp_path / "cifar100.npz"
    npz.write_bytes(b"")
    import okddip_tf.reproduce as reproducing

    with pytest.raises(ValueError, match="train on cifar10 and cifar100: keep one with --only"):
        reproducing.reproduce("table6", str(tmp_path / "grid"),  # Table 6: CIFAR-10 and -100
                              Budget(epochs=2, seeds=1, npz=str(npz)), only="resnet32")
    assert not (tmp_path / "grid").exists()


def test_cli_npz_that_is_not_there_says_so(tmp_path, run_cli):
    result = run_cli("reproduce", "--experiment=table2", f"--workdir={tmp_path}",
                     f"--npz={tmp_path / 'absent.npz'}", "--only=cifar100", timeout=120)
    assert result.returncode != 0
    assert "absent.npz: no such file" in result.stderr and "leave --npz out" in result.stderr


def keras_like_zip(path):
    """A file that reads as a .keras checkpoint to checkpoint_files (a zip with its members).

    Its members carry a fixed date, as Keras writes them: two calls give the same bytes (hence
    the same hash) even when a 2-second step of the zip clock falls between them.
    """
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("config.json", "{}"), ("model.weights.h5", b"weights")):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def test_a_cell_resumes_after_its_checkpoints_epoch_not_its_historys(tmp_path, fake_trainer):
    """Killed after history.json logged epoch 2 and before its checkpoint was saved, a run
    goes on after epoch 1 (what `okddip train` reads from checkpoints/): the starting line and
    sittings.json say so, and a checkpoint saved for epoch 2 before state.json counts."""
    executable, _ = fake_trainer
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=3, seeds=1)
    run = manifest.Run("cifar100", "resnet32", "baseline")
    directory = runner.run_dir(workdir, run, 0)
    write_run(directory, [0.1, 0.2])
    os.remove(os.path.join(directory, "metrics.json"))
    assert runner.resume_epoch(directory) == 2  # no checkpoint files: history.json's count
    checkpoints = os.path.join(directory, "checkpoints")
    os.makedirs(checkpoints)
    last = os.path.join(checkpoints, "last.keras")
    keras_like_zip(last)
    atomic_files.write_json(os.path.join(checkpoints, "state.json"), {
        "epochs_done": 1, "checkpoint_sha256": checkpoint_files.file_sha256(last)})
    assert runner.resume_epoch(directory) == 1
    keras_like_zip(last + ".new")  # the same bytes would hash the same: add a member
    with zipfile.ZipFile(last + ".new", "a") as archive:
        archive.writestr("metadata.json", "{}")
    os.replace(last + ".new", last)
    assert runner.resume_epoch(directory) == 2  # saved for epoch 2, state.json not yet
    with open(last, "wb") as f:
        f.write(b"truncated")  # damaged: the training reports it; the runner reads history
    assert runner.resume_epoch(directory) == 2
    keras_like_zip(last)
    lines = []
    tasks = runner.plan([run], budget, workdir)
    runner.Runner(tasks, budget, workdir, executable=executable, poll_seconds=0.05,
                  echo=lines.append).run()
    assert any(line.endswith(f"resuming after epoch 1 of 3; log {directory}/train.log")
               for line in lines), lines
    sittings = json.load(open(os.path.join(directory, runner.SITTINGS)))
    assert [s["from_epoch"] for s in sittings] == [1]


def test_the_latest_sitting_that_started_at_or_before_an_epoch_trained_it(tmp_path):
    # A then B; C resumed from an earlier checkpoint than B and retrained B's epochs.
    atomic_files.write_json(str(tmp_path / runner.SITTINGS), [
        {"from_epoch": 2, "cpu": "A"}, {"from_epoch": 5, "cpu": "B"},
        {"from_epoch": 4, "cpu": "C"}])
    assert runner.sitting_cpus(str(tmp_path), 7) == {"not recorded": 2, "A": 2, "C": 3}
    assert runner.sitting_cpus(str(tmp_path / "none"), 2) == {"not recorded": 2}


def test_a_failed_teacher_stops_its_students_and_the_rest_go_on(tmp_path, fake_trainer,
                                                               monkeypatch):
    executable, trained = fake_trainer
    monkeypatch.setenv("FAKE_FAIL", "cifar100_resnet110_bottleneck_baseline")
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=2, seeds=1)
    tasks = table6_tasks(workdir, budget)
    lines = []
    runner.Runner(tasks, budget, workdir, executable=executable, poll_seconds=0.05,
                  echo=lines.append).run()
    states = {task.run.id: (task.state, task.reason) for task in tasks}
    assert states["cifar100_resnet110_bottleneck_baseline"] == (
        "failed", "okddip train exited with 1: okddip train: the data is gone. Point "
                  "TFDS_DATA_DIR at it.")
    assert states["cifar100_resnet32_kd_teacher_checkpoint-best"] == (
        "failed", "its teacher did not finish")
    assert states["cifar100_resnet32_okddip_kd_branch_teacher_checkpoint-best"][0] == "failed"
    assert states["cifar100_resnet32_baseline"][0] == "finished"
    assert states["cifar100_resnet32_okddip_branch"][0] == "finished"
    assert len(trained()) == 3
    # A budget smaller than the runs already there is refused before anything is launched.
    smaller = table6_tasks(workdir, Budget(epochs=1, seeds=1))
    runner.Runner(smaller, Budget(epochs=1, seeds=1), workdir, executable=executable,
                  poll_seconds=0.05, echo=lines.append).run()
    refused = next(t for t in smaller if t.run.id == "cifar100_resnet32_baseline")
    assert refused.state == "failed" and "holds 2 epochs, a larger budget than --epochs=1: " \
        "give each budget its own --workdir" in refused.reason
    assert len(trained()) == 4  # only the teacher that had failed was tried again


def test_progress_poll_skips_a_history_caught_mid_write(tmp_path):
    workdir, budget = str(tmp_path / "grid"), Budget(epochs=3, seeds=1)
    task = runner.plan([manifest.Run("cifar100", "resnet32", "baseline")], budget, workdir)[0]
    lines = []
    poller = runner.Runner([task], budget, workdir, echo=lines.append)
    os.makedirs(task.directory)
    with open(os.path.join(task.directory, "history.json"), "w") as f:
        f.write('{"loss": [1.0, ')  # a trainer that writes in place, read half-way
    poller.report_progress(task)
    assert lines == [] and task.reported_epochs == -1
    write_run(task.directory, [0.1, 0.2])
    poller.report_progress(task)
    assert lines == [f"{poller.label(task)}: epoch 2/3, 0m10s per epoch, about 0m10s left for "
                     "this cell."]


def test_train_command_is_an_okddip_train_command_line(tmp_path):
    run = manifest.Run("cifar100", "resnet32", "okddip", options=(("okddip.attention", "mean"),))
    argv = runner.train_command(run, Budget(epochs=15, seeds=1), 0, str(tmp_path), "python")
    assert argv[:4] == ["python", "-m", "okddip_tf.cli", "train"]
    assert argv[4] == (f"--config={runner.config_file()}:dataset=cifar100,method=okddip,"
                       "backbone=resnet32,students=4,sharing=branch")
    assert argv[5] == f"--workdir={tmp_path}/cifar100_resnet32_okddip_branch_attention-mean/seed0"
    assert argv[6:] == ["--config.okddip.attention=mean", "--config.train.epochs=15",
                        "--config.optim.drop_epochs=(8, 11)", "--config.rampup.length=4",
                        "--config.train.seed=0", "--config.train.verbose=2"]


# --- the report --------------------------------------------------------------------------------

def test_report_of_one_row_leaves_the_excluded_rows_out(tmp_path):
    """Table 2 run with --only=resnet32: the tables, the cell list and the errors figure show
    that row only; the other cells are counted in one line and stay in results.json."""
    workdir, budget = str(tmp_path), Budget(epochs=2, seeds=1)
    experiment = manifest.EXPERIMENTS["table2"]
    selected = manifest.select(experiment, "resnet32")
    assert {cell.row for cell in selected} == {"ResNet-32"}
    baseline = next(cell for cell in selected if cell.column == "Baseline")
    write_run(runner.run_dir(workdir, baseline.run, 0), [0.4, 0.5])
    results = report.collect(experiment, workdir, budget, selected)
    excluded = [c for c in results["cells"] if c["state"] == "not run (excluded by --only)"]
    assert len(excluded) == len(results["cells"]) - len(selected) > 0
    assert {c["row"] for c in excluded} == set(results["rows"]) - {"ResNet-32"}
    names, note = figures.draw(results, os.path.join(workdir, "figures"))
    text = open(report.write(results, workdir, names, note)).read()
    assert (f"**Cells:** 1 of {len(selected)} finished ({len(excluded)} left out by --only); "
            f"{len(selected) - 1} not: see their state below.") in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ")
                  and not line.startswith(("| Network", "| cell"))]
    assert table_rows and all(line.startswith("| ResNet-32") for line in table_rows)
    assert f"{len(excluded)} cells were not run (excluded by --only), in the rows" in text
    assert "| 50.00 (paper 28.76; +21.24) |" in text


def test_report_of_a_synthetic_grid_matches_numpy(tmp_path):
    """Table 5 with two seeds: best-epoch and last-epoch errors, their means and sample stds,
    the differences to the paper, one cell partial, one never started."""
    workdir, budget = str(tmp_path), Budget(epochs=4, seeds=2)
    rng = np.random.default_rng(0)
    experiment = manifest.EXPERIMENTS["table5"]
    written = {}
    for cell in experiment.cells[:4]:
        for seed in range(2):
            accuracies = rng.uniform(0.2, 0.7, 4)
            written[(cell.column, seed)] = accuracies
            write_run(runner.run_dir(workdir, cell.run, seed), accuracies)
    partial = experiment.cells[4]
    write_run(runner.run_dir(workdir, partial.run, 0), [0.3, 0.4, 0.5, 0.6])
    write_run(runner.run_dir(workdir, partial.run, 1), [0.3, 0.4])
    results = report.collect(experiment, workdir, budget)
    for cell in results["cells"][:4]:
        seeds = [written[(cell["column"], seed)] for seed in range(2)]
        best = [100 * (1 - max(a)) for a in seeds]
        last = [100 * (1 - a[-1]) for a in seeds]
        assert cell["state"] == "finished"
        assert cell["best"]["mean"] == pytest.approx(np.mean(best), abs=1e-12)
        assert cell["best"]["std"] == pytest.approx(np.std(best, ddof=1), abs=1e-12)
        assert cell["last"]["mean"] == pytest.approx(np.mean(last), abs=1e-12)
        assert cell["best_minus_paper"] == pytest.approx(np.mean(best) - cell["paper"]["error"])
        assert [cell["seeds"][s]["best_epoch"] for s in "01"] == [int(np.argmax(a)) + 1
                                                                  for a in seeds]
        assert cell["wall_seconds_per_seed"]["mean"] == 40.0
        assert cell["median_epoch_seconds"]["mean"] == 10.0
    fifth, sixth = results["cells"][4], results["cells"][5]
    assert fifth["state"] == "1/2 seeds finished (seed 1: 2/4 epochs)"
    assert fifth["best"] == {"mean": pytest.approx(40.0), "std": None, "n": 1}
    assert sixth["state"] == "not started"
    assert sixth["best"] is None
    names, note = figures.draw(results, os.path.join(workdir, "figures"))
    path = report.write(results, workdir, names, note)
    text = open(path).read()
    first = text.splitlines()[0]
    assert first.startswith("# table5 at 4 of 300 epochs, 2 seeds:")
    random_cell = results["cells"][0]
    assert (f"{random_cell['best']['mean']:.2f} ± {random_cell['best']['std']:.2f} "
            f"(paper 28.24; {random_cell['best_minus_paper']:+.2f})") in text
    assert json.load(open(os.path.join(workdir, "results.json")))["cells"][0]["best"] == \
        pytest.approx(random_cell["best"])
    assert note == "" and names == ["errors.png", "curves_resnet_32.png"]
    check_png(os.path.join(workdir, "figures", "errors.png"))


def check_png(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # not blank


def test_figures_2_and_3_from_synthetic_runs(tmp_path):
    workdir, budget = str(tmp_path), Budget(epochs=3, seeds=1)
    diversity = manifest.EXPERIMENTS["figure2"]
    for number, cell in enumerate(diversity.cells):
        write_run(runner.run_dir(workdir, cell.run, 0), [0.3, 0.4, 0.5],
                  extra={"val_diversity": [0.5 - 0.1 * number, 0.4, 0.3]})
    results = report.collect(diversity, workdir, budget)
    assert results["cells"][0]["last_diversity"]["mean"] == pytest.approx(0.3)
    names, _ = figures.draw(results, os.path.join(workdir, "figures"))
    assert names[0] == "figure2.png"
    check_png(os.path.join(workdir, "figures", "figure2.png"))
    sizes = manifest.EXPERIMENTS["figure3"]
    for cell in sizes.cells:
        write_run(runner.run_dir(workdir, cell.run, 0), [0.3, 0.5, 0.5 + cell.run.num_students
                                                         / 100])
    results = report.collect(sizes, workdir, budget)
    okddip = [c for c in results["cells"] if c["row"] == "OKDDip"]
    assert [round(c["best"]["mean"], 6) for c in okddip] == [round(100 * (0.5 - m / 100), 6)
                                                            for m in range(3, 9)]
    names, _ = figures.draw(results, os.path.join(workdir, "figures"))
    assert names[0] == "figure3.png"
    check_png(os.path.join(workdir, "figures", "figure3.png"))
    assert "| OKDDip | 47.00 (paper" not in report.markdown(results)  # m=3 has no paper number
    assert "46.00 (paper 25.63; +20.37)" in report.markdown(results)


def test_report_without_matplotlib_says_how_to_get_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "pyplot", lambda: None)
    results = report.collect(manifest.EXPERIMENTS["table5"], str(tmp_path), Budget(2, 1))
    names, note = figures.draw(results, str(tmp_path / "figures"))
    assert names == [] and 'pip install -e ".[reproduce]"' in note
    assert note in report.markdown(results, names, note)


# --- the command -------------------------------------------------------------------------------

def test_reproduce_trains_a_real_cell_then_skips_it(tmp_path, tfds_data_dir, run_cli):
    """A smoke-sized Table 5 cell through `okddip reproduce`: trained, reported, not retrained."""
    args = ("reproduce", "--experiment=table5", f"--workdir={tmp_path}", "--epochs=2",
            "--seeds=1", "--smoke", "--only=w/o two-level")
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    directory = tmp_path / "cifar100_resnet32_okddip_branch_two_level-False" / "seed0"
    assert "starting of 2" in first.stdout and "finished 2 epochs" in first.stdout
    assert len(json.load(open(directory / "timing.json"))["epoch_seconds"]) == 2
    results = json.load(open(tmp_path / "results.json"))
    measured = [c for c in results["cells"] if c["state"] == "finished"]
    assert [c["column"] for c in measured] == ["w/o two-level"]
    history = json.load(open(directory / "history.json"))
    accuracy = np.asarray(history["val_leader_accuracy"])
    assert measured[0]["last"]["mean"] == pytest.approx(100 * (1 - accuracy[-1]))
    assert (tmp_path / "report.md").is_file() and (tmp_path / "figures" / "errors.png").is_file()
    second = run_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "finished before; not trained again" in second.stdout
    assert "starting" not in second.stdout


@pytest.mark.slow
def test_reproduce_trains_a_kd_cell_after_its_teacher(tmp_path, tfds_data_dir, run_cli):
    result = run_cli("reproduce", "--experiment=table6", f"--workdir={tmp_path}", "--epochs=1",
                     "--seeds=1", "--smoke",
                     "--only=cifar100_resnet32_kd_teacher_checkpoint-best")
    assert result.returncode == 0, result.stdout + result.stderr
    order = re.findall(r"\] (\S+) seed 0: starting", result.stdout)
    assert order == ["cifar100_resnet110_bottleneck_baseline",
                     "cifar100_resnet32_kd_teacher_checkpoint-best"]


@pytest.mark.parametrize("args, message", [
    (("--experiment=table9",), "Unknown experiment 'table9'; known: table1, table2"),
    (("--experiment=table2", "--only=nothing"), "--only='nothing' matches no cell of table2"),
    (("--experiment=table2", "--epochs=0"), "--epochs must be >= 1"),
    ((), "needs --experiment=NAME and --workdir=DIR"),
    (("--experiment=table2", "--cell_gpus=1"), "--cell_gpus goes with --ray=ADDRESS"),
    (("--experiment=table2", "--ray=local", "--parallel=2"),
     "--parallel is for cells on this machine; with --ray, Ray runs"),
    (("--experiment=table2", "--ray="), "--ray needs an address: auto"),
    (("--experiment=table2", "--ray=local", "--cell_cpus=few"),
     "--cell_cpus=few: --cell_cpus=N takes a number"),
])
def test_reproduce_refuses_bad_arguments(tmp_path, run_cli, args, message):
    result = run_cli("reproduce", f"--workdir={tmp_path}", *args, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_reproduce_help(run_cli):
    result = run_cli("reproduce", "--help", timeout=60)
    assert result.returncode == 0
    for flag in ("--experiment=NAME", "--epochs=E", "--seeds=N", "--only=WORDS",
                 "--report_only", "--parallel=N", "--ray=ADDRESS", "--cell_cpus=N",
                 "--cell_gpus=N"):
        assert flag in result.stdout


def test_report_only_trains_nothing_and_writes_where_asked(tmp_path, run_cli):
    workdir, elsewhere = tmp_path / "grid", tmp_path / "report"
    write_run(runner.run_dir(str(workdir), cell("table5", "ResNet-32", "OKDDip").run, 0),
              [0.5, 0.75])
    result = run_cli("reproduce", "--experiment=table5", f"--workdir={workdir}",
                     "--epochs=2", "--seeds=1", "--report_only", f"--report_dir={elsewhere}",
                     timeout=120)
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stdout
    text = (elsewhere / "report.md").read_text()
    assert "**Cells:** 1 of 6 finished" in text and "| 25.00 (paper 25.63; -0.63) |" in text
    assert (elsewhere / "figures" / "errors.png").is_file()
    assert not (elsewhere / "figures" / "differences.png").exists()  # one seed: no interval
    assert str(tmp_path) not in text  # no path of the machine in a report that may be shared
    assert sorted(p.name for p in workdir.iterdir()) == ["cifar100_resnet32_okddip_branch"]



def test_readme_quotes_the_committed_cpu_reports():
    """The README's paragraph on the committed Table 2 and Figure 2 reports quotes every cell's
    last-epoch error (the mean over its finished seeds, their count where more than one) and
    diversity as their results.json have them, and nothing else."""
    folder = REPO_ROOT / "benchmarks" / "results" / "reproduce"
    results, diversity = (json.loads((folder / name / "results.json").read_text()) for name in
                          ("table2_cifar100_resnet32_15_epochs", "figure2_resnet32_15_epochs"))
    # Cells with at least one finished seed; their means over the finished seeds.
    cells = [cell for cell in results["cells"] if cell["row"] == "ResNet-32" and cell["last"]]
    finished = {cell["column"]: cell["last"]["mean"] for cell in cells}
    seeds = {cell["column"]: cell["last"]["n"] for cell in cells}
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("**What the committed CPU report shows.**")
    paragraph = " ".join(readme[start:readme.index("\n\n", start)].split())
    quoted = dict(re.findall(r"(Baseline|Ind|DML|CL-ILR|ONE|OKDDip \((?:branch|network)\)) "
                             r"(\d+\.\d\d)%", paragraph))
    assert quoted == {column: f"{error:.2f}" for column, error in finished.items()}
    words = ("No", "One", "Two", "Three", "Four", "Five", "Six")
    if len(finished) < 7:
        coverage = f"{words[len(finished)]} of its seven cells have a finished seed"
    elif len(set(seeds.values())) == 1 and min(seeds.values()) > 1:  # every cell, as many seeds
        each = words[min(seeds.values())].lower()
        coverage = f"All seven of its cells have {each} finished seeds"
    else:
        coverage = "All seven of its cells have a finished seed"
    assert coverage in paragraph
    # The order it states is the means' and the paper's, and the spread of the first three.
    ours = sorted(finished, key=finished.get)
    papers = [c["column"] for c in sorted(cells, key=lambda c: c["paper"]["error"])]
    assert (f"By the means, lowest error first: {', '.join(ours)}; the paper's order: "
            f"{', '.join(papers)}.") in paragraph
    assert (f"The first three lie within {finished[ours[2]] - finished[ours[0]]:.2f} points of "
            "each other") in paragraph
    for column, count in seeds.items():  # a mean over several seeds says so
        assert (f"{column} {finished[column]:.2f}% (mean of {count} seeds" in paragraph) == \
            (count > 1)
    # The gap to the paper's 300-epoch numbers, as the range over the finished cells' means.
    above_paper = [cell["last"]["mean"] - cell["paper"]["error"] for cell in cells]
    assert (f"top-1 error, {min(above_paper):.1f}–{max(above_paper):.1f} points above the "
            "paper's 300-epoch numbers") in paragraph
    # Figure 2's cells with at least one finished seed (a cell still training more seeds is
    # "partial"), their mean diversity, and "mean of N seeds" exactly where N > 1.
    measured = {cell["column"]: cell["last_diversity"] for cell in diversity["cells"]
                if cell["row"] == "ResNet-32" and cell["last_diversity"]}
    assert measured, "Figure 2's report has no finished seed"
    assert dict(re.findall(r"(Ind|OKDDip|ONE|CL-ILR) (0\.\d{3})", paragraph)) == {
        column: f"{value['mean']:.3f}" for column, value in measured.items()}
    for column, value in measured.items():
        assert (f"{column} {value['mean']:.3f} (mean of {value['n']} seeds" in paragraph) == \
            (value["n"] > 1)
    # The difference it quotes is the report's computed one, and "separated" only if computed so.
    okddip = next(c for c in results["comparisons"] if c["column"] == "OKDDip (branch)"
                  and c["versus"] == "Baseline" and c["measure"] == "last_error")
    assert f"OKDDip (branch) − Baseline: {okddip['difference']:+.2f} points" in paragraph
    if okddip["interval"]:  # its test and interval as computed, once there are seeds to measure
        low, high = okddip["interval"]
        assert f"({okddip['test']} over" in paragraph
        assert f"95% interval {low:+.2f} to {high:+.2f}" in paragraph
    assert ("calls none of them separated" in paragraph) == (
        not any(c["separated"] for c in results["comparisons"]))
    # The per-seed margins it quotes are Baseline's minus OKDDip's last-epoch error, seed by seed.
    per_seed = {cell["column"]: cell["seeds"] for cell in results["cells"]
                if cell["row"] == "ResNet-32" and cell["column"] in ("Baseline", "OKDDip (branch)")}
    paired = sorted(set(per_seed["Baseline"]) & set(per_seed["OKDDip (branch)"]))
    baseline, okddip_seeds = per_seed["Baseline"], per_seed["OKDDip (branch)"]
    margins = [f"{baseline[k]['last_error'] - okddip_seeds[k]['last_error']:.2f}" for k in paired]
    claim = (f"OKDDip erred less on each of the {words[len(paired)].lower()} seeds "
             f"(by {', '.join(margins[:-1])} and {margins[-1]} points)")
    assert (claim in paragraph) == all(float(m) > 0 for m in margins)
    # The network group's margins over Baseline and DML, seed by seed, where it quotes them.
    network = {cell["column"]: cell["seeds"] for cell in results["cells"]
               if cell["row"] == "ResNet-32"}
    for versus, claim in (("Baseline", "The network group erred less than Baseline on each of "
                                       "the three seeds (by {} points)"),
                          ("DML", "and less than DML on each (by {} points)")):
        margins = [network[versus][k]["last_error"] - network["OKDDip (network)"][k]["last_error"]
                   for k in ("0", "1", "2")]
        listed = ", ".join(f"{m:.2f}" for m in margins[:-1]) + f" and {margins[-1]:.2f}"
        assert (claim.format(listed) in paragraph) == (min(margins) > 0), versus
    # How many of the report's intervals exclude 0 for the network group, of how many computed.
    intervals = [c for c in results["comparisons"]
                 if c["measure"] == "last_error" and c["interval"]]
    separated = sum(c["separated"] for c in intervals if "OKDDip (network)" in
                    (c["column"], c["versus"]))
    assert (f"These are {separated} of the {len(intervals)} last-epoch intervals the report "
            "computes") in paragraph
    assert ("each at 95% with no correction for their number: if no method differed from "
            f"another, about {0.05 * len(intervals):.2f} of them would exclude 0 by chance"
            ) in paragraph
    # Which of them hold under Holm's correction, with the p-values the report computed.
    held = [c for c in intervals if c["holm_separated"]]
    assert [(c["column"], c["versus"]) for c in held] == [("OKDDip (network)", "DML")]
    others = [c["p_value"] for c in intervals if c["separated"] and not c["holm_separated"]]
    assert (f"Under Holm's step-down correction over the {len(intervals)}, which keeps the "
            "chance of any false exclusion among them at 5%, one of them holds, the network "
            f"group's difference from DML (p = {held[0]['p_value']:.2g}); the other separated "
            f"ones do not (p from {min(others):.2g} to {max(others):.2g})") in paragraph
    tested = [c for c in diversity["comparisons"] if c["interval"]]
    assert all(c["holm_separated"] for c in tested)
    assert (f"All {words[len(tested)].lower()} hold under Holm's correction over the "
            f"{words[len(tested)].lower()} (p at most {max(c['p_value'] for c in tested):.2g})"
            ) in paragraph
    for link in re.findall(r"\]\((benchmarks/[^)]+)\)", paragraph):  # the files it points to
        assert (REPO_ROOT / link).is_file(), link
    assert_quoted_differences_are_computed(paragraph, results, diversity)


def test_readme_quotes_the_committed_gpu_report():
    """The README's paragraph on the committed 60-epoch GPU report names the device and budget the
    report records, quotes every finished cell's last- and best-epoch error, the report's computed
    differences (no interval where a cell has one seed), the gaps to the paper and to the CPU
    row's means as ranges, and each cell's epoch times, all as the results.json files have them."""
    folder = REPO_ROOT / "benchmarks" / "results" / "reproduce"
    gpu, cpu = (json.loads((folder / name / "results.json").read_text()) for name in
                ("table2_cifar100_resnet32_60_epochs_h200_jax",
                 "table2_cifar100_resnet32_15_epochs"))
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    start = readme.index("**What the committed GPU report shows.**")
    paragraph = readme[start:readme.index("## ", start)]
    assert gpu["machine"]["backend"] == "jax" and "with the JAX backend" in paragraph
    (device,) = gpu["machine"]["accelerators"]
    assert f"on one {device} (" in paragraph
    budget = gpu["budget"]
    assert f"at {budget['epochs']} of 300 epochs" in paragraph and budget["seeds"] == 1
    assert "one seed each" in paragraph and budget["train_examples"] is None
    cells = {cell["column"]: cell for cell in gpu["cells"] if cell["last"]}
    assert len(cells) == 4 and all(cell["last"]["n"] == 1 for cell in cells.values())
    order = sorted(cells, key=lambda column: cells[column]["last"]["mean"])
    last = ", ".join(f"{c} {cells[c]['last']['mean']:.2f}%" for c in order[:-1])
    assert f"At the last epoch {last} and {order[-1]} {cells[order[-1]]['last']['mean']:.2f}%" \
        in paragraph
    best = ", ".join(f"{cells[c]['best']['mean']:.2f}%" for c in order[:-1])
    assert f"(best epoch: {best} and {cells[order[-1]]['best']['mean']:.2f}%)" in paragraph

    def span(values, decimals):
        return f"{min(values):.{decimals}f}–{max(values):.{decimals}f}"

    above_paper = [cell["last"]["mean"] - cell["paper"]["error"] for cell in cells.values()]
    assert f"{span(above_paper, 1)} points above the paper's" in paragraph
    cpu_means = {cell["column"]: cell["last"]["mean"] for cell in cpu["cells"]
                 if cell["row"] == "ResNet-32" and cell["last"]}
    below_cpu = [cpu_means[column] - cell["last"]["mean"] for column, cell in cells.items()]
    assert f"{span(below_cpu, 1)} points below the 15-epoch CPU row's means" in paragraph
    assert all(c["interval"] is None for c in gpu["comparisons"])
    assert "these differences have no interval" in paragraph
    assert_quoted_differences_are_computed(paragraph, gpu, {"comparisons": []})
    medians = {column: cell["median_epoch_seconds"]["mean"] for column, cell in cells.items()}
    groups = [seconds for column, seconds in medians.items() if column != "Baseline"]
    assert (f"a Baseline epoch took {medians['Baseline']:.1f} s and a 4-student group epoch "
            f"{span(groups, 1)} s") in paragraph
    walls = ", ".join(f"{column} {runner.duration(cells[column]['wall_seconds_per_seed']['mean'])}"
                      for column in ("Baseline", "Ind", "ONE", "OKDDip (branch)"))
    assert f"60 epochs: {walls})" in paragraph
    codes = {code for cell in cells.values() for seed in cell["seeds"].values()
             for code in seed["code"]}
    assert codes == {"4256450+changes"} and '"4256450+changes"' in paragraph


def assert_quoted_differences_are_computed(paragraph, results, diversity):
    """Every "A − B" the paragraph quotes gives the report's last-epoch difference (Table 2's
    error to 2 decimals, Figure 2's diversity, where OKDDip has no "(branch)", to 3), and where it
    quotes an interval, the report's test, its 95% interval and "separated" exactly when the
    interval excludes 0. A quote runs to the end of its sentence or the next quote."""
    names = r"OKDDip \((?:branch|network)\)|OKDDip|Baseline|Ind|DML|CL-ILR|ONE"
    quotes = list(re.finditer(rf"({names}) − ({names})", paragraph))
    assert len(quotes) >= 2, "the paragraph quotes no differences"
    for number, quote in enumerate(quotes):
        end = quotes[number + 1].start() if number + 1 < len(quotes) else len(paragraph)
        sentence_end = paragraph.find(". ", quote.end())
        text = paragraph[quote.end():end if sentence_end < 0 else min(end, sentence_end)]
        column, versus = quote.groups()
        figure2 = column == "OKDDip"
        comparisons = (diversity if figure2 else results)["comparisons"]
        measure, decimals = ("last_diversity", 3) if figure2 else ("last_error", 2)
        found = [c for c in comparisons if (c["column"], c["versus"], c["measure"]) ==
                 (column, versus, measure)]
        assert len(found) == 1, f"{quote.group(0)}: the report computes no such difference"
        computed = found[0]
        value = re.search(r"[+-]\d+\.\d+", text)
        assert value and value.group(0) == f"{computed['difference']:+.{decimals}f}", \
            f"{quote.group(0)} quotes {value and value.group(0)}"
        claims_separated = re.search(r"(?<!not )(?<!no longer )separated", text) is not None
        if "interval" in text:
            low, high = computed["interval"]
            assert f"({computed['test']} over" in text, quote.group(0)
            assert f"95% interval {low:+.{decimals}f} to {high:+.{decimals}f}" in text, \
                quote.group(0)
            assert claims_separated == computed["separated"], quote.group(0)
        else:
            assert not claims_separated, quote.group(0)


@pytest.mark.parametrize("one, verdict", [(0.10, "holds here"), (0.40, "does not hold here")])
def test_figure2_report_ranks_diversity_against_the_papers_claim(tmp_path, one, verdict):
    workdir, budget = str(tmp_path), Budget(epochs=2, seeds=1)
    experiment = manifest.EXPERIMENTS["figure2"]
    last = {"OKDDip": 0.25, "ONE": one, "CL-ILR": 0.12, "Ind": 0.30}
    for cell in experiment.cells:
        if cell.row == "ResNet-32":
            write_run(runner.run_dir(workdir, cell.run, 0), [0.3, 0.4],
                      extra={"val_diversity": [0.05, last[cell.column]]})
    text = report.markdown(report.collect(experiment, workdir, budget))
    ranked = sorted(last, key=last.get, reverse=True)
    assert ("- ResNet-32, highest last-epoch diversity first: "
            + ", ".join(f"{column} {last[column]:.3f}" for column in ranked)) in text
    assert f"(OKDDip above ONE and CL-ILR, below Ind) {verdict}; the differences:" in text
    # One seed per cell: each difference is printed without an interval, and nothing is said
    # about noise or separation.
    assert (f"  - OKDDip − ONE: last epoch {0.25 - one:+.3f}; one seed in OKDDip and in ONE: the "
            "seed-to-seed spread is not measured, so there is no interval.") in text
    assert "separated" not in text and "noise" not in text
    assert "no correction for their number" not in text  # no interval, so no caution about many
    assert "best-epoch error" not in text and "ResNet-110, highest" not in text
    assert f"| ResNet-32 / ONE | `cifar100_resnet32_one_branch` | finished | {one:.3f} (1 seed) |" \
        in text


def table2_row(workdir, errors, columns=("Baseline", "ONE", "OKDDip (branch)")):
    """Table 2's ResNet-32 cells `columns` with the given per-seed errors (one epoch each)."""
    for column in columns:
        run = cell("table2", "ResNet-32", column).run
        for seed, error in enumerate(errors[column]):
            write_run(runner.run_dir(workdir, run, seed), [1 - error / 100])


@pytest.mark.parametrize("spread", [0.05, 0.3, 3.0])
def test_report_says_separated_exactly_where_the_interval_excludes_zero(tmp_path, spread):
    rng = np.random.default_rng(7)
    means = {"Baseline": 45.0, "ONE": 44.5, "OKDDip (branch)": 43.5}
    errors = {column: mean + spread * rng.standard_normal(3) for column, mean in means.items()}
    workdir = str(tmp_path)
    table2_row(workdir, errors)
    results = report.collect(manifest.EXPERIMENTS["table2"], workdir, Budget(epochs=1, seeds=3),
                             manifest.select(manifest.EXPERIMENTS["table2"], "resnet32"))
    found = {(c["column"], c["versus"], c["measure"]): c for c in results["comparisons"]}
    pairs = [("ONE", "Baseline"), ("OKDDip (branch)", "Baseline"), ("OKDDip (branch)", "ONE")]
    assert sorted(found) == sorted((a, b, m) for a, b in pairs
                                   for m in ("best_error", "last_error"))
    text = report.markdown(results)
    for (column, versus), measure in ((pair, m) for pair in pairs for m in ("best_error",)):
        entry = found[(column, versus, measure)]
        per_seed = errors[column] - errors[versus]  # the same seeds 0, 1, 2 finished: paired
        half = statistics.t_quantile(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
        low, high = per_seed.mean() - half, per_seed.mean() + half
        assert entry["test"] == "paired t"
        assert entry["interval"] == pytest.approx([low, high], abs=1e-9)
        assert entry["separated"] is bool(low > 0 or high < 0)
        line = next(l for l in text.splitlines() if l.startswith(f"  - {column} − {versus} ("))
        assert (f"best epoch {per_seed.mean():+.2f} (95% CI {low:+.2f} to {high:+.2f}"
                + (", separated from 0;" if entry["separated"] else ";")) in line
    excluding = sum(bool(entry["separated"]) for entry in results["comparisons"])
    assert text.count("separated") == excluding
    # Each interval's p is SciPy's paired t; Holm's correction runs over a measure's three, as
    # its adjusted p-values (NumPy) say, and the text marks it beside each separated difference.
    stats = pytest.importorskip("scipy.stats")
    holding = 0
    for measure in ("best_error", "last_error"):
        p = np.array([stats.ttest_rel(errors[column], errors[versus]).pvalue
                      for column, versus in pairs])
        order = np.argsort(p)
        adjusted = np.maximum.accumulate(np.minimum(1.0, (3 - np.arange(3)) * p[order]))
        expected = np.empty(3, dtype=bool)
        expected[order] = adjusted <= 0.05
        for (column, versus), value, holds in zip(pairs, p, expected):
            entry = found[(column, versus, measure)]
            assert entry["p_value"] == pytest.approx(value, rel=1e-7)
            assert entry["holm_separated"] is bool(holds)
            holding += bool(holds)
    assert text.count("holds under Holm's correction too") == holding
    assert text.count("not under Holm's correction") == excluding - holding
    # The differences figure draws each last-epoch interval, marked as the report computed it.
    names, _ = figures.draw(results, str(tmp_path / "figures"))
    assert names[:2] == ["errors.png", "differences.png"]
    check_png(str(tmp_path / "figures" / "differences.png"))
    entries = figures.interval_entries(results, "ResNet-32", "last_error")
    last = [found[(column, versus, "last_error")] for column, versus in pairs]
    assert entries == [(f"{column} − {versus}", entry["difference"], *entry["interval"],
                        entry["separated"]) for (column, versus), entry in zip(pairs, last)]
    # Three intervals per measure, each at 95%: the report says how many exclude 0 by chance.
    assert ("The report computes 3 such intervals per measure, each at 95% with no correction "
            "for their number: if no cell truly differed from another, about 0.15 of them would "
            "still exclude 0 by chance") in " ".join(text.split())
    if spread == 0.05:
        assert excluding == 6  # 0.5 and 1.0 points apart with a spread of 0.05
    if spread == 3.0:
        assert found[("OKDDip (branch)", "Baseline", "best_error")]["separated"] is False
    assert "noise" not in text
    written = json.loads(json.dumps(results))  # as results.json has it
    assert written["comparisons"][0]["interval"] == pytest.approx(
        results["comparisons"][0]["interval"])


def test_report_takes_seeds_from_an_earlier_results_json(tmp_path):
    """Seed 0 lives only in an earlier report's results.json; seeds 1 and 2 in the workdir."""
    workdir = str(tmp_path / "grid")
    experiment = manifest.EXPERIMENTS["table2"]
    columns = ("Baseline", "OKDDip (branch)")
    later = {"Baseline": [45.0, 45.6], "OKDDip (branch)": [44.0, 44.2]}
    for column in columns:
        for seed, error in zip((1, 2), later[column]):
            write_run(runner.run_dir(workdir, cell("table2", "ResNet-32", column).run, seed),
                      [0.4, 1 - error / 100])
    earlier = {"Baseline": 44.8, "OKDDip (branch)": 43.7}
    prior = {"experiment": "table2", "generated": "2026-12-03T14:11:17+00:00",
             "budget": {"epochs": 2, "seeds": 1, "train_examples": None, "smoke": False},
             "cells": [{"row": "ResNet-32", "column": column,
                        "run": cell("table2", "ResNet-32", column).run.id,
                        "seeds": {"0": {"state": "finished", "epochs": 2, "best_epoch": 2,
                                        "best_error": earlier[column],
                                        "last_error": earlier[column] + 0.1,
                                        "wall_seconds": 100.0, "median_epoch_seconds": 50.0}}}
                       for column in columns]}
    prior["cells"][0]["seeds"]["0"]["cpus"] = {"Earlier CPU (AVX2)": 2}  # Baseline's is recorded
    path = str(tmp_path / "earlier" / "results.json")
    atomic_files.write_json(path, prior)
    budget = Budget(epochs=2, seeds=3)
    selected = manifest.select(experiment, "resnet32")
    results = report.collect(experiment, workdir, budget, selected, prior=path)
    source = f"{path} (generated 2026-12-03T14:11:17+00:00)"
    assert results["seed_sources"] == [source]
    cells = {c["column"]: c for c in results["cells"] if c["row"] == "ResNet-32"}
    for column in columns:
        seeds = cells[column]["seeds"]
        assert seeds["0"]["source"] == source and "source" not in seeds["1"]
        assert cells[column]["state"] == "finished"
        best = [earlier[column]] + later[column]
        assert cells[column]["best"]["mean"] == pytest.approx(np.mean(best))
        assert cells[column]["best"]["std"] == pytest.approx(np.std(best, ddof=1))
        assert cells[column]["wall_seconds_per_seed"]["n"] == 3
    paired = next(c for c in results["comparisons"] if c["measure"] == "best_error")
    assert paired["test"] == "paired t" and paired["seeds"][0] == ["0", "1", "2"]
    assert cells["ONE"]["state"] == "not started" and "source" not in cells["ONE"]["seeds"]["0"]
    names, note = figures.draw(results, str(tmp_path / "figures"))
    assert note == (f"The accuracy curves leave out seed(s) 0 from `{source}` (it kept no "
                    "per-epoch accuracy); they show every other seed.")
    assert len(figures.histories(cells["Baseline"])) == 2
    text = report.markdown(results, names, note)
    assert (f"**Seeds:** seed 0 of ResNet-32 / Baseline, ResNet-32 / OKDDip (branch) from "
            f"`{source}`.") in text
    assert note in text
    # Every finished seed's epochs are counted: the earlier report's as it recorded them
    # (OKDDip's seed 0 has no record), the workdir's 8 without a sittings.json as not recorded.
    line = next(l for l in text.splitlines() if l.startswith("**Epochs trained per CPU"))
    assert line.endswith("Earlier CPU (AVX2): 2; not recorded: 10.")
    # A seed the workdir finished is its own, not the earlier report's.
    write_run(runner.run_dir(workdir, cell("table2", "ResNet-32", "Baseline").run, 0),
              [0.5, 0.5])
    again = report.collect(experiment, workdir, budget, selected, prior=path)
    baseline = next(c for c in again["cells"] if c["column"] == "Baseline"
                    and c["row"] == "ResNet-32")
    assert "source" not in baseline["seeds"]["0"] and baseline["seeds"]["0"]["best_error"] == 50.0


def test_a_seed_from_an_earlier_results_json_keeps_its_curves(tmp_path, monkeypatch):
    """Figure 2 with seed 0 from an earlier report and seed 1 in the workdir: results.json keeps
    each seed's test curves, so the figure draws the mean of both seeds' diversity per epoch,
    and a seed still training is drawn as far as it got."""
    experiment, budget = manifest.EXPERIMENTS["figure2"], Budget(epochs=3, seeds=3)
    selected = manifest.select(experiment, "resnet32")
    earlier_dir, workdir = str(tmp_path / "earlier"), str(tmp_path / "grid")
    first = {"val_diversity": [0.10, 0.20, 0.30], "val_ensemble_accuracy": [0.3, 0.4, 0.5]}
    for column in ("OKDDip", "ONE"):
        write_run(runner.run_dir(earlier_dir, cell("figure2", "ResNet-32", column).run, 0),
                  [0.3, 0.4, 0.5], extra=first)
    earlier = report.collect(experiment, earlier_dir, Budget(epochs=3, seeds=1), selected)
    okddip_earlier = next(c for c in earlier["cells"] if c["column"] == "OKDDip")
    assert okddip_earlier["seeds"]["0"]["curves"] == {"val_leader_accuracy": [0.3, 0.4, 0.5],
                                                      **first}
    path = str(tmp_path / "report" / "results.json")
    atomic_files.write_json(path, earlier)
    okddip_run = cell("figure2", "ResNet-32", "OKDDip").run
    write_run(runner.run_dir(workdir, okddip_run, 1), [0.3, 0.4, 0.5],
              extra={"val_diversity": [0.30, 0.40, 0.50]})
    write_run(runner.run_dir(workdir, okddip_run, 2), [0.3], extra={"val_diversity": [0.5]})
    results = report.collect(experiment, workdir, budget, selected, prior=path)
    okddip = next(c for c in results["cells"] if c["column"] == "OKDDip")
    assert okddip["seeds"]["0"]["source"] and okddip["seeds"]["2"]["state"] == "1/3 epochs"
    drawn = []
    original = figures.save
    monkeypatch.setattr(figures, "save", lambda plt, figure, *args, **kwargs: (
        drawn.append(figure), original(plt, figure, *args, **kwargs))[1])
    names, note = figures.draw(results, str(tmp_path / "figures"))
    assert names[0] == "figure2.png" and note == ""
    lines = {line.get_label(): line for line in drawn[0].axes[0].get_lines()}
    # Epoch 1: seeds 0, 1 and the training seed 2; epochs 2 and 3: seeds 0 and 1.
    assert list(lines["OKDDip (in progress)"].get_ydata()) == pytest.approx([0.3, 0.3, 0.4])
    # ONE's only seed is the earlier one, finished: not marked as training.
    assert list(lines["ONE"].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    # The accuracy panels: seed 0 kept its leader's accuracy, and ONE's panel is drawn from it.
    panels = [axis.get_title().split("\n")[0] for axis in drawn[1].axes if axis.get_visible()]
    assert panels == ["OKDDip (in progress)", "ONE"]
    # Seeds of a results.json written before `curves`: Figure 2's kept its diversity as `curve`
    # and is drawn; Table 2's kept no curve and is left out (the note names it).
    assert figures.seed_curves({"curve": [0.1, 0.2]}) == {"val_diversity": [0.1, 0.2]}
    assert figures.seed_curves({"state": "finished", "last_error": 45.0}) == {}
    old = {**results, "cells": [{**c, "seeds": {"0": {"state": "finished", "source": "old.json",
                                                      "curve": [0.1, 0.2, 0.3]}}}
                                for c in results["cells"] if c["column"] == "ONE"]}
    names, note = figures.draw(old, str(tmp_path / "old_figures"))
    assert names == ["figure2.png"]  # no accuracy panel is left empty
    assert note == ("The accuracy curves leave out seed(s) 0 from `old.json` (it kept no "
                    "per-epoch accuracy); they show every other seed.")


@pytest.mark.parametrize("change, message", [
    ({"budget": {"epochs": 15, "seeds": 1, "train_examples": None, "smoke": False}},
     r"another budget \(epochs=15 there, 2 here\)"),
    ({"budget": {"epochs": 2, "seeds": 1, "train_examples": 5000, "smoke": True}},
     r"train_examples=5000 there, None here; smoke=True there, False here"),
    ({"experiment": "table5"}, "is a report of 'table5', not of 'table2'"),
])
def test_an_earlier_results_json_of_another_budget_is_refused(tmp_path, change, message):
    prior = {"experiment": "table2", "generated": "2026-12-03T14:11:17+00:00", "cells": [],
             "budget": {"epochs": 2, "seeds": 1, "train_examples": None, "smoke": False}}
    path = str(tmp_path / "results.json")
    atomic_files.write_json(path, {**prior, **change})
    with pytest.raises(ValueError, match=message):
        report.collect(manifest.EXPERIMENTS["table2"], str(tmp_path), Budget(epochs=2, seeds=3),
                       prior=path)
    with pytest.raises(ValueError, match="no results.json of an earlier report"):
        report.collect(manifest.EXPERIMENTS["table2"], str(tmp_path), Budget(epochs=2, seeds=3),
                       prior=str(tmp_path / "missing.json"))


def test_curves_highlight_the_line_the_table_reports(tmp_path, monkeypatch):
    """Ind reports the students' mean and OKDDip its leader: each panel's highlighted line is
    that one; the peers' ensemble, equal to the students' ensemble here, is drawn above it."""
    workdir = str(tmp_path)
    curves = {"val_leader_accuracy": [0.30, 0.40, 0.50], "val_student_accuracy": [0.25, 0.35, 0.45],
              "val_ensemble_accuracy": [0.35, 0.45, 0.55],
              "val_student_ensemble_accuracy": [0.35, 0.45, 0.55]}
    for column, key in (("Ind", "student_accuracy"), ("OKDDip (branch)", "leader_accuracy")):
        run = cell("table2", "ResNet-32", column).run
        write_run(runner.run_dir(workdir, run, 0), curves[f"val_{key}"], key=key,
                  extra={k: v for k, v in curves.items() if k != f"val_{key}"})
    results = report.collect(manifest.EXPERIMENTS["table2"], workdir, Budget(epochs=3, seeds=1),
                             manifest.select(manifest.EXPERIMENTS["table2"], "resnet32"))
    drawn = []
    original = figures.save
    monkeypatch.setattr(figures, "save", lambda plt, figure, *args, **kwargs: (
        drawn.append(figure), original(plt, figure, *args, **kwargs))[1])
    names, _ = figures.draw(results, str(tmp_path / "figures"))
    assert "curves_resnet_32.png" in names
    panels = [axis for axis in drawn[-1].axes if axis.get_visible()]
    expected = {"Ind": ("val_student_accuracy", "mean of the students"),
                "OKDDip (branch)": ("val_leader_accuracy", "leader (the deployed student)")}
    assert [axis.get_title().split("\n")[0] for axis in panels] == list(expected)
    for axis, (key, label) in zip(panels, expected.values()):
        assert axis.get_title().endswith(f"reports: {label}")
        lines = {line.get_label(): line for line in axis.get_lines()}
        band = lines[figures.REPORTED_LINE]
        assert list(band.get_ydata()) == pytest.approx([100 * v for v in curves[key]])
        assert list(lines[label].get_ydata()) == pytest.approx(list(band.get_ydata()))
        peers = lines["peers' ensemble"]
        assert peers.get_zorder() > max(line.get_zorder() for name, line in lines.items()
                                        if name != "peers' ensemble")
        assert peers.get_linestyle() != lines["students' ensemble"].get_linestyle()
    check_png(os.path.join(workdir, "figures", "curves_resnet_32.png"))


def test_rewrite_recomputes_a_report_from_its_results_json_alone(tmp_path):
    """A committed report whose runs are gone: rewrite() adds the comparisons and rebuilds
    report.md from results.json, the same as a report built from the runs, figures kept."""
    workdir = str(tmp_path / "grid")
    table2_row(workdir, {"Baseline": [45.0, 45.4], "ONE": [44.1, 44.6],
                         "OKDDip (branch)": [43.0, 43.3]})
    experiment = manifest.EXPERIMENTS["table2"]
    results = report.collect(experiment, workdir, Budget(epochs=1, seeds=2),
                             manifest.select(experiment, "resnet32"))
    report.write(results, workdir, ["errors.png", "curves_resnet_32.png"])
    before = open(os.path.join(workdir, "report.md")).read()
    old = {key: value for key, value in results.items()
           if key not in ("comparisons", "seed_sources")}  # a results.json of before this change
    atomic_files.write_json(os.path.join(workdir, "results.json"), old)
    path = report.rewrite(workdir)
    assert open(path).read() == before
    rewritten = atomic_files.read_json(os.path.join(workdir, "results.json"))
    assert rewritten["comparisons"] == results["comparisons"]  # JSON keeps floats exactly
    assert rewritten["generated"] == results["generated"] and rewritten["seed_sources"] == []


@pytest.mark.parametrize("spread", [0.0005, 0.05])
def test_figure2_differences_are_computed_like_the_tables(tmp_path, spread):
    """Figure 2 with three seeds: OKDDip's last-epoch diversity minus each rival's, paired over
    the seeds, 'separated' exactly where the interval excludes 0."""
    workdir, experiment = str(tmp_path), manifest.EXPERIMENTS["figure2"]
    rng = np.random.default_rng(3)
    last = {column: value + spread * rng.standard_normal(3) for column, value in
            {"OKDDip": 0.19, "ONE": 0.15, "CL-ILR": 0.18, "Ind": 0.20}.items()}
    for c in experiment.cells:
        if c.row == "ResNet-32":
            for seed in range(3):
                write_run(runner.run_dir(workdir, c.run, seed), [0.3, 0.4],
                          extra={"val_diversity": [0.05, last[c.column][seed]]})
    results = report.collect(experiment, workdir, Budget(epochs=2, seeds=3))
    text = report.markdown(results)
    assert [(e["column"], e["versus"]) for e in results["comparisons"]] == [
        ("OKDDip", "ONE"), ("OKDDip", "CL-ILR"), ("OKDDip", "Ind")]
    for entry in results["comparisons"]:
        per_seed = last["OKDDip"] - last[entry["versus"]]
        half = 4.302652729749752 * np.std(per_seed, ddof=1) / np.sqrt(3)  # t_{0.975, 2}
        assert entry["test"] == "paired t" and entry["measure"] == "last_diversity"
        assert entry["interval"] == pytest.approx([per_seed.mean() - half,
                                                   per_seed.mean() + half], abs=1e-12)
        assert entry["separated"] is bool(abs(per_seed.mean()) > half)
        assert (f"  - OKDDip − {entry['versus']} (paired t over seeds 0, 1, 2, 2 degrees of "
                f"freedom): last epoch {per_seed.mean():+.3f} (95% CI") in text
    assert text.count("separated") == sum(e["separated"] for e in results["comparisons"])
    assert text.count("separated") == (3 if spread == 0.0005 else 0)  # this draw's outcome
