"""Numbers the README quotes come from the committed JSON a committed script wrote."""

import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_quotes_the_committed_quickstart_measurement():
    """The README's quickstart time and accuracies are quickstart.json's, as
    benchmarks/quickstart.py wrote them."""
    measured = json.loads((REPO_ROOT / "benchmarks" / "results" / "quickstart.json").read_text())
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    minutes, seconds = divmod(round(measured["wall_clock_seconds"]), 60)
    final = measured["test_split_final_epoch"]
    assert f"**{minutes} min {seconds} s** wall clock" in readme
    assert f"leader test accuracy of **{100 * final['leader_accuracy']:.1f}%**" in readme
    assert (f"(peers {100 * final['peer_accuracy']:.1f}%, peer ensemble "
            f"{100 * final['ensemble_accuracy']:.1f}%;") in readme


def percent(value):
    return f"{100 * value:.1f}%"


def mean_and_std(summary):
    """"97.3% ± 0.8%": a variant's mean and sample std over seeds, as the README writes them."""
    return f"{percent(summary['mean'])} ± {percent(summary['std'])}"


def paired(difference):
    """"+0.2 points (95% t interval -0.2 to +0.6)" and whether the seeds separate it from 0."""
    low, high = difference["interval"]
    verdict = ("the seeds separate it from zero" if difference["separated"]
               else "the seeds do not separate it from zero")
    return (f"{100 * difference['difference']:+.1f} points (95% t interval {100 * low:+.1f} to "
            f"{100 * high:+.1f}): {verdict}")


def test_readme_quotes_the_committed_real_data_measurements():
    """The README's digits and fine-tuning numbers (issue 23) are those of digits_mlp.json and
    finetune_cifar100_split.json, as benchmarks/digits_mlp.py and
    benchmarks/finetune_cifar100_split.py wrote them."""
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    results = REPO_ROOT / "benchmarks" / "results"
    digits = json.loads((results / "digits_mlp.json").read_text())["summary"]
    assert f"Over {digits['summary']['single']['n']} seeds" in readme
    for variant in ("single", "okddip_network", "okddip_branch"):
        assert f"**{mean_and_std(digits['summary'][variant])}**" in readme, variant
    assert paired(digits["differences"]["okddip_network - single"]) in readme
    finetune = json.loads((results / "finetune_cifar100_split.json").read_text())
    summary = finetune["summary"]
    assert f"Over {summary['summary']['keep_single']['n']} seeds" in readme
    for variant in ("keep_single", "keep_group", "fresh_single"):
        assert f"**{mean_and_std(summary['summary'][variant])}**" in readme, variant
    assert paired(summary["differences"]["keep_group - keep_single"]) in readme
    pretraining = finetune["pretraining"]
    assert f"({percent(pretraining['test_accuracy_classes_0_49'])} on the old classes' test " \
           "images)" in readme
    assert f"{pretraining['parameters']:,} parameters" in readme
    runs = finetune["runs"]
    ensemble = sum(run["keep_group"]["peer_ensemble_accuracy"] for run in runs) / len(runs)
    assert f"the peers' ensemble ({percent(ensemble)} on average)" in readme
    fresh_train = sum(run["fresh_single"]["train_accuracy_last_epoch"] for run in runs) / len(runs)
    assert f"({percent(fresh_train)} on its last training epoch)" in readme
