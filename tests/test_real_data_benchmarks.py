"""The issue-23 real-data benchmarks: the digits script runs end to end on a tiny budget."""

import json

import numpy as np

from _benchmarks import load_benchmark


def test_digits_benchmark_trains_every_variant_and_writes_its_report(tmp_path):
    """One seed, one epoch: each variant trains on the real digits and is scored on its held-out
    stratified split; the JSON holds what the README reads. Accuracy is not checked here."""
    digits = load_benchmark("digits_mlp")
    out = tmp_path / "digits.json"
    record = digits.run([3], epochs=1, batch_size=64, students=3, out=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    x_train, y_train, x_test, y_test = digits.split(3)
    assert len(x_train) + len(x_test) == 1797 and x_train.shape[1] == 64
    assert 0 <= x_train.min() and x_train.max() <= 1  # scaled by 1/16
    # Stratified: every class keeps its share of the test split (within one example).
    counts = np.bincount(y_test, minlength=10) / np.bincount(np.concatenate([y_train, y_test]))
    np.testing.assert_allclose(counts, 0.25, atol=1 / 50)
    assert record["budget"]["test_samples"] == len(y_test)
    (run,) = record["runs"]
    for variant in digits.VARIANTS:
        assert 0 <= run[variant]["accuracy"] <= 1
        assert record["summary"]["summary"][variant]["mean"] == run[variant]["accuracy"]
    for variant in ("okddip_network", "okddip_branch"):
        assert len(run[variant]["student_accuracies"]) == 2  # the peers of a group of 3
        difference = record["summary"]["differences"][f"{variant} - single"]
        assert np.isclose(difference["difference"],
                          run[variant]["accuracy"] - run["single"]["accuracy"])
        assert difference["interval"] is None  # one seed measures no spread
