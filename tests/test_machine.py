"""okddip_tf.reproduce.machine: what a benchmark JSON records about where and from what it ran."""

import json
import os
import subprocess
import sys

import pytest

from okddip_tf.reproduce import machine

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_git_commit_is_the_checked_out_commit_and_none_outside_a_checkout(tmp_path):
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    assert machine.git_commit(REPO_ROOT) == expected
    assert machine.git_commit(str(tmp_path)) is None


def test_git_tree_changed_sees_an_edited_tracked_file_only(tmp_path):
    assert machine.git_tree_changed(str(tmp_path)) is None
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (tmp_path / "tracked.txt").write_text("a\n")
    for args in (["init", "-q"], ["add", "tracked.txt"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "untracked.txt").write_text("b\n")
    assert machine.git_tree_changed(str(tmp_path)) is False
    (tmp_path / "tracked.txt").write_text("changed\n")
    assert machine.git_tree_changed(str(tmp_path)) is True


def test_cpu_kind_names_one_of_the_kinds_the_results_compare():
    kind = machine.cpu_kind()
    assert kind["kind"] in {"AVX-512 + BF16", "AVX-512", "AVX2", "unknown vector extensions"}
    if kind["kind"] == "AVX2":
        assert kind["avx2"]
    assert (kind["kind"].startswith("AVX-512")) == bool(kind["avx512_flags"])


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_describe_records_the_loaded_frameworks_and_onednn(onednn):
    """In a fresh process: TensorFlow fixes its kernels on first use, and this suite's are set."""
    script = ("import json, sys, okddip_tf, tensorflow; from okddip_tf.reproduce import machine; "
              "print(json.dumps({'found': machine.describe(), 'tf': tensorflow.__version__, "
              "'jax': 'jax' in sys.modules}))")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    found = result["found"]
    assert found["cpu"] == machine.cpu_kind() and found["cpu_count"] == os.cpu_count()
    assert found["tensorflow"] == result["tf"] and ("jax" in found) == result["jax"]
    assert found["TF_ENABLE_ONEDNN_OPTS"] == onednn
    assert found["onednn_in_use"] is (onednn == "1")
