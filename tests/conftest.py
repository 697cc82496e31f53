"""Shared pytest fixtures."""

import os
import pathlib
import subprocess
import sys

import pytest

# Before anything loads TensorFlow: okddip_tf sets TF_ENABLE_ONEDNN_OPTS on import, and TensorFlow
# picks its CPU kernels once. Importing it here gives every test the kernels users get, whichever
# test file runs first or alone.
import okddip_tf  # noqa: F401  pylint: disable=unused-import

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_WORKERS = 4


@pytest.fixture(scope="session")
def tfds_data_dir():
    """The tfds data dir from $TFDS_DATA_DIR, holding a prepared cifar100.

    Relative paths are taken relative to the repository root, as CI may set
    one. When the data is missing the test fails under CI
    (``$CI`` set) and is skipped, with the reason, elsewhere.
    """
    value = os.environ.get("TFDS_DATA_DIR", "")
    path = pathlib.Path(value)
    if value and not path.is_absolute():
        path = REPO_ROOT / path
    if not value:
        problem = "TFDS_DATA_DIR is not set"
    elif not (path / "cifar100").is_dir() or not any((path / "cifar100").iterdir()):
        problem = f"TFDS_DATA_DIR={value} holds no prepared cifar100/<version>/"
    else:
        return str(path)
    message = (f"{problem}; point it at a tfds data dir with cifar100 prepared "
               "(e.g. `tfds build cifar100` on a networked machine) to run real-data tests.")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cifar100_npz():
    """The compact CIFAR-100 file (JPEG layout) that $OKDDIP_CIFAR100_NPZ names.

    Like `tfds_data_dir`: missing, the test fails under CI and is skipped elsewhere.
    """
    value = os.environ.get("OKDDIP_CIFAR100_NPZ", "")
    path = pathlib.Path(value)
    if value and not path.is_absolute():
        path = REPO_ROOT / path
    if value and path.is_file():
        return str(path)
    message = ("OKDDIP_CIFAR100_NPZ does not name a file" if value else
               "OKDDIP_CIFAR100_NPZ is not set") + (
        "; point it at an .npz of CIFAR-100 in the compact JPEG layout (see okddip_tf/data/npz.py) "
        "to run the tests that read the real file.")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run only with --runslow or OKDDIP_RUN_SLOW=1."""
    if config.getoption("--runslow") or os.environ.get("OKDDIP_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest --runslow` or OKDDIP_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU, at most MAX_WORKERS. Each worker loads TensorFlow (about a
    gigabyte) and its ops use every core, so more workers than that add memory, not speed."""
    del config
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


@pytest.fixture
def run_cli():
    """Runs `python -m okddip_tf.cli ARGS...` from the repository root; returns the result."""

    def run(*args, timeout=600):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        return subprocess.run([sys.executable, "-m", "okddip_tf.cli", *args], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)

    return run
