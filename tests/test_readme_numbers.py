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


def short(value, digits=1):
    """1.0e-3 style: the README's way of writing a small number (digits=0: 3e-3)."""
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_readme_states_the_two_worker_step_bounds_the_test_asserts_and_their_measurement():
    """The default suite's two-worker step: the README's bounds are the test's, and its measured
    differences are step_parity_multiworker_step.json's, which the bounds clear twice over."""
    import test_multiworker  # pylint: disable=import-outside-toplevel

    bounds = test_multiworker.STEP_BOUNDS
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
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
