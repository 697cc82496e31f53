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


def test_readme_quotes_the_committed_token_learning_measurement():
    """The README's token-group learning result is token_learning.json's, as
    benchmarks/token_learning.py wrote it, with the test's threshold."""
    measured = json.loads((REPO_ROOT / "benchmarks" / "results" /
                           "token_learning.json").read_text())
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    summary, runs = measured["summary"], measured["runs"]
    assert summary["min"] == summary["max"]  # the README states one value for every seed
    assert (f"the leader classified **{100 * summary['min']:.1f}%** of 512 held-out sequences "
            f"for each of {len(runs)} seeds") in readme
    assert f"the test asserts at least {100 * measured['threshold']:.0f}%" in readme
    seconds = sorted(run["seconds"] for run in runs)
    assert f"{seconds[0]:.0f}-{seconds[-1]:.0f} s a seed" in readme
