"""Numbers the README quotes come from the committed JSON a committed script wrote."""

import json
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"


def readme_words():
    """The README with every run of whitespace as one space (quotes may wrap across lines)."""
    return " ".join((REPO_ROOT / "README.md").read_text().split())


def result(name):
    """benchmarks/results/<name>, parsed."""
    return json.loads((RESULTS / name).read_text())


def test_readme_quotes_the_committed_quickstart_measurement():
    """The README's quickstart time and accuracies are quickstart.json's, as
    benchmarks/quickstart.py wrote them."""
    measured = json.loads((REPO_ROOT / "benchmarks" / "results" / "quickstart.json").read_text())
    readme = readme_words()
    minutes, seconds = divmod(round(measured["wall_clock_seconds"]), 60)
    final = measured["test_split_final_epoch"]
    assert f"**{minutes} min {seconds} s** wall clock" in readme
    assert f"leader test accuracy of **{100 * final['leader_accuracy']:.1f}%**" in readme
    assert (f"(peers {100 * final['peer_accuracy']:.1f}%, peer ensemble "
            f"{100 * final['ensemble_accuracy']:.1f}%;") in readme


def test_readme_quotes_the_committed_token_learning_measurement():
    """The README's token-group learning result is token_learning.json's, as
    benchmarks/token_learning.py wrote it, with the test's threshold."""
    measured = json.loads((REPO_ROOT / "benchmarks" / "results" /
                           "token_learning.json").read_text())
    readme = readme_words()
    summary, runs = measured["summary"], measured["runs"]
    assert summary["min"] == summary["max"]  # the README states one value for every seed
    assert (f"the leader classified **{100 * summary['min']:.1f}%** of 512 held-out sequences "
            f"for each of {len(runs)} seeds") in readme
    assert f"the test asserts at least {100 * measured['threshold']:.0f}%" in readme
    seconds = sorted(run["seconds"] for run in runs)
    assert f"{seconds[0]:.0f}-{seconds[-1]:.0f} s a seed" in readme


def test_readme_quotes_the_grids_gpu_hours_and_they_count_the_manifest():
    """The README's GPU-hours of the paper's grid are grid_gpu_hours.json's, whose runs, seeds
    and epochs are the manifest's and whose anchors give back the authors' H200 epoch times."""
    from okddip_tf.reproduce import budget, manifest  # pylint: disable=import-outside-toplevel

    results = REPO_ROOT / "benchmarks" / "results"
    grid = json.loads((results / "grid_gpu_hours.json").read_text())
    runs = []
    for experiment in manifest.EXPERIMENTS.values():
        runs += [run for run in experiment.runs() if run not in runs]
    for schedule, epochs in (("cifar", 300), ("imagenet", 90)):
        mine = [run for run in runs if run.schedule == schedule]
        assert grid[schedule]["runs"] == len(mine)
        assert grid[schedule]["epochs"] == len(mine) * budget.PAPER_SEEDS * epochs
    rows = {row["run"]: row["h200_epoch_seconds"] for row in grid["runs"]}
    assert rows["cifar100_resnet32_baseline"]["from_single"] == pytest.approx(4.8)
    assert rows["cifar100_resnet32_okddip_branch"]["from_okddip_branch_4"] == pytest.approx(11.7)
    readme = readme_words()
    start = readme.index("**The whole grid in GPU-hours.**")
    paragraph = readme[start:readme.index("**", start + 40)]
    cifar, imagenet = grid["cifar"], grid["imagenet"]
    low, high = cifar["gpu_hours"]["from_single"], cifar["gpu_hours"]["from_okddip_branch_4"]
    assert f"hold {cifar['runs']} distinct runs" in paragraph
    assert f"that is {cifar['epochs']:,} epochs, about {low:,.0f}–{high:,.0f} H200-hours " \
           f"({low / 24:.0f}–{high / 24:.0f} days on one GPU)" in paragraph
    assert (f"Table 3's {imagenet['runs']} ImageNet runs (3 seeds of 90 epochs) add about "
            f"{imagenet['gpu_hours']['from_single']:,.0f}–"
            f"{imagenet['gpu_hours']['from_okddip_branch_4']:,.0f} H200-hours") in paragraph
    authors = grid["sources"]["h200_epoch_seconds"]
    architectures = json.loads((results / "train_throughput_architectures.json").read_text())
    cpu_ratio = architectures["results"]["resnet32"]["group_cost_vs_single"]
    assert (f"{authors['okddip_branch_4']} s for the 4-student branch-based ResNet-32 group and "
            f"{authors['single']} s for one ResNet-32") in paragraph
    assert (f"group costs {cpu_ratio:.2f}× one network where the H200's costs "
            f"{authors['okddip_branch_4'] / authors['single']:.2f}×") in paragraph


def short(value, digits=1):
    """1.0e-3 style: the README's way of writing a small number (digits=0: 3e-3)."""
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_readme_states_the_two_worker_step_bounds_the_test_asserts_and_their_measurement():
    """The default suite's two-worker step: the README's bounds are the test's, and its measured
    differences are step_parity_multiworker_step.json's, which the bounds clear twice over."""
    import test_multiworker  # pylint: disable=import-outside-toplevel

    bounds = test_multiworker.STEP_BOUNDS
    readme = readme_words()
    assert (f"less than {short(bounds['all'], 0)} of the update "
            f"({short(bounds['trainable_and_other'])} for the trainable weights alone, "
            f"{short(bounds['moving_stats'], 0)} for the BatchNorm moving statistics)") in readme
    runs = json.loads((REPO_ROOT / "benchmarks" / "results" /
                       "step_parity_multiworker_step.json").read_text())["runs"]
    test_case = next(run for run in runs if run["seed"] == 0)
    others = [run for run in runs if run["seed"] != 0]
    assert (f"seed 0, the test's, {short(test_case['all'])} "
            f"(trainable {short(test_case['trainable_and_other'])})") in readme
    assert (f"seeds 1 to {max(run['seed'] for run in others)} at most "
            f"{short(max(run['all'] for run in others))} "
            f"({short(max(run['trainable_and_other'] for run in others))})") in readme
    assert (f"moving statistics at most {short(max(run['moving_stats'] for run in runs))}"
            in readme)
    for name, bound in bounds.items():
        assert bound >= 2 * max(run[name] for run in runs), name
    assert all(run["workers_bit_identical"] for run in runs)


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
    readme = readme_words()
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


def test_readme_quotes_the_committed_test_suite_measurement():
    """The README's size and time of the default suite are test_suite.json's, as
    benchmarks/test_suite.py wrote them."""
    measured = json.loads((REPO_ROOT / "benchmarks" / "results" / "test_suite.json").read_text())
    readme = readme_words()
    assert measured["exit_code"] == 0 and not measured["failures"]  # "all passing"
    assert (f"runs the default test suite: {measured['default_tests']} tests when last timed, "
            f"with {measured['slow_tests']} slow ones skipped") in readme
    low = min(min(pair) for pair in measured["load_averages_before_after"])
    high = max(max(pair) for pair in measured["load_averages_before_after"])
    assert f"{measured['wall_seconds']:.0f} s on a 2-core" in readme
    assert f"(load average {low:.1f}–{high:.1f} during the run" in readme


def test_readme_says_what_the_code_version_checks_measured():
    """The README compares Table 2's seeds trained at different commits on the strength of
    code_version_parity*.json (benchmarks/code_version_parity.py) and
    running_variance_effect.json (benchmarks/running_variance_effect.py): every cell's batches
    and weights equal at both old commits, the logged losses within the quoted rounding, the
    moving-variance updates in the ratio n/(n-1), and the quoted largest effect of that ratio on
    a finished seed's error."""
    readme = readme_words()
    worst_loss = 0.0
    for name in ("code_version_parity.json", "code_version_parity_83f1171.json"):
        parity = result(name)
        summaries = [cell["summary"] for cell in parity["cells"]]
        assert len(summaries) == 6 and not parity["cells_without_a_config"]
        assert all(s["data_equal"] for s in summaries)  # "draw the same batches"
        assert all(s["max_weight_relative_difference"] == 0 for s in summaries)  # "same weights"
        assert all(s["unbiased_now_biased_before"] == s["moving_variance_layers"]
                   and s["max_update_ratio_error"] < 1e-5 for s in summaries)
        worst_loss = max([worst_loss] + [s["max_log_relative_difference"] for s in summaries])
        assert f"at {parity['old_commit']}" in readme
        assert f"first {parity['steps']} training steps" in readme
    assert f"at most {worst_loss:.0e} of their value" in readme
    effect = result("running_variance_effect.json")
    assert effect["max_abs_recorded_vs_saved_points"] < 1e-9  # the re-evaluation is the run's
    assert (f"re-evaluating the {len(effect['seeds'])} finished seeds of the workdir with the "
            "other side's moving variance moves their errors by at most "
            f"{effect['max_abs_difference_points']:.2f} points") in readme


def test_readme_quotes_the_committed_nan_guard_cost():
    """The README's cost of fit's default NaNGuard is nan_guard_cost_tensorflow.json's, as
    benchmarks/nan_guard_cost.py wrote it."""
    measured = result("nan_guard_cost_tensorflow.json")
    readme = readme_words()
    ratios = measured["median_ratio_to_none"]
    assert (f"before every step ({measured['bytes_copied_per_step_keep'] / 1e6:.1f} MB for the "
            "4-student ResNet-32 group)") in readme
    assert (f"a step took {ratios['keep']:.2f} times a plain fit's with the copy and "
            f"{ratios['guard']:.2f} times with the guard's per-step read-back alone (medians of "
            f"{measured['rounds_counted']} interleaved rounds") in readme
    assert measured["machine"]["cpu_count"] == 2  # "on a 2-core CPU"


def test_readme_quotes_the_committed_cells_at_once_measurement():
    """The README's advice on --parallel on a CPU rests on cpu_cells_at_once.json's ratios, as
    benchmarks/cpu_cells_at_once.py wrote them."""
    measured = result("cpu_cells_at_once.json")
    readme = readme_words()
    ratios = measured["ratio_to_one"]
    default, single = sorted(ratios["two"]), sorted(ratios["two_single_thread"])
    assert measured["machine"]["cpu_count"] == 2 and measured["variant"] == "okddip_network_4"
    assert (f"trained {default[0]:.2f}–{default[-1]:.2f} times the images per second of one at a "
            "time with TensorFlow's default threads, which `--parallel` leaves them, and "
            f"{single[0]:.2f}–{single[-1]:.2f} times with one thread each: "
            f"{len(measured['rounds'])} rounds of `benchmarks/cpu_cells_at_once.py`") in readme
