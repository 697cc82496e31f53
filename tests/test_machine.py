"""okddip_tf.machine: what every benchmark JSON records about where and from what it ran."""

import os
import subprocess

from okddip_tf import machine

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_git_commit_is_the_checked_out_commit_and_none_outside_a_checkout(tmp_path):
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    assert machine.git_commit(REPO_ROOT) == expected
    assert machine.git_commit(str(tmp_path)) is None


def test_cpu_kind_names_one_of_the_kinds_the_results_compare():
    kind = machine.cpu_kind()
    assert kind["kind"] in {"AVX-512 + BF16", "AVX-512", "AVX2", "unknown vector extensions"}
    if kind["kind"] == "AVX2":
        assert kind["avx2"]
    assert (kind["kind"].startswith("AVX-512")) == bool(kind["avx512_flags"])

