"""benchmarks/code_version_parity.py's comparison, on synthetic runs whose differences are known:
the README's claim that two commits train alike rests on it."""

import ml_collections
import numpy as np
import pytest

from _benchmarks import load_benchmark

parity = load_benchmark("code_version_parity")
MOMENTUM, N, STEPS = 0.9, 128, 2


def run(tmp_path, name, *, unbiased, kernel_shift=0.0, batch_shift=0, loss=2.5):
    """A worker's output: one kernel, one BatchNorm moving variance updated over STEPS batches
    (the unbiased update multiplies each batch variance by N / (N - 1)), one batch of data."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3))
    start = np.ones(4)
    variance = start.copy()
    for batch_variance in (np.array([0.5, 2.0, 1.5, 0.2]), np.array([0.7, 1.0, 3.0, 0.4])):
        update = batch_variance * (N / (N - 1) if unbiased else 1.0)
        variance = MOMENTUM * variance + (1 - MOMENTUM) * update
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, count=np.array(2), weight_0=kernel, weight_1=start,
             after_0=kernel * 0.9 + kernel_shift, after_1=variance,
             data_first_0_x=np.arange(6) + batch_shift, data_first_0_y=np.arange(2))
    names = ["block/kernel", "block_bn/moving_variance"]
    meta = {"logs": [{"loss": loss}], "names": names, "skipped_config_keys": [],
            "batchnorm": {names[1]: {"momentum": MOMENTUM, "unbiased": unbiased,
                                     "values_per_channel": N}}}
    return np.load(path), meta


def test_the_same_training_but_the_unbiased_update_compares_equal(tmp_path):
    new, new_meta = run(tmp_path, "new", unbiased=True)
    old, old_meta = run(tmp_path, "old", unbiased=False)
    found = parity.compare("cell", new, new_meta, old, old_meta, STEPS)["summary"]
    assert found["data_equal"] and found["max_weight_relative_difference"] == 0
    assert found["max_log_difference"] == 0 and found["unbiased_now_biased_before"] == 1
    assert found["max_update_ratio_error"] < 1e-12  # the ratio is N / (N - 1) exactly


def test_a_difference_in_data_weights_loss_or_the_variance_update_shows(tmp_path):
    new, new_meta = run(tmp_path, "new", unbiased=True)
    old, old_meta = run(tmp_path, "batches", unbiased=False, batch_shift=1)
    assert not parity.compare("c", new, new_meta, old, old_meta, STEPS)["summary"]["data_equal"]
    old, old_meta = run(tmp_path, "weights", unbiased=False, kernel_shift=1e-6)
    found = parity.compare("c", new, new_meta, old, old_meta, STEPS)["summary"]
    assert found["max_weight_relative_difference"] > 1e-7
    old, old_meta = run(tmp_path, "loss", unbiased=False, loss=2.5 + 1e-3)
    found = parity.compare("c", new, new_meta, old, old_meta, STEPS)["summary"]
    assert found["max_log_relative_difference"] == pytest.approx(1e-3 / (2.5 + 1e-3))
    # Both unbiased: the update ratio is 1, which the check expects only where the old is biased.
    old, old_meta = run(tmp_path, "variance", unbiased=True)
    old_meta["batchnorm"]["block_bn/moving_variance"]["unbiased"] = False
    found = parity.compare("c", new, new_meta, old, old_meta, STEPS)["summary"]
    assert found["max_update_ratio_error"] == pytest.approx(1 - (N - 1) / N)


def test_a_saved_config_applies_over_the_defaults_and_unknown_keys_are_listed():
    config = ml_collections.ConfigDict({"model": {"backbone": "resnet32", "dropout": None},
                                        "optim": {"drop_epochs": (150, 225)}})
    skipped = parity.apply_saved(config, {"model": {"backbone": "resnet110", "old_key": 1},
                                          "optim": {"drop_epochs": [8, 11]}, "gone": {}})
    assert config.model.backbone == "resnet110" and config.optim.drop_epochs == (8, 11)
    assert config.model.dropout is None and sorted(skipped) == ["gone", "model.old_key"]
