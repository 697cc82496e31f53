"""The test suite's size and time, for the README: how many tests run by default, how many are slow.

    python benchmarks/test_suite.py [--collect_only] [--workers=0 --out=PATH]

Runs `python -m pytest -q` (the README's test command; with --collect_only only counts the
tests, `pytest --collect-only`, and the slow ones, `-m slow`) and writes
benchmarks/results/test_suite.json (or --out): the counts, the pytest-xdist workers (`-n`:
"auto", as pyproject.toml sets; `--workers=0` runs every test in one process, for comparison),
the summary line, the wall time with the load averages before and after (a suite timed beside
other work says so), the slowest tests, the CPU kind, the command, the date and the git commit
(with whether tracked files differed from it).
Set TFDS_DATA_DIR and OKDDIP_CIFAR100_NPZ as for the tests.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402


SLOWEST = 15  # the test phases listed by time, to choose what to mark slow


def pytest(*args):
    """(exit code, pytest's summary line, the FAILED/ERROR lines of its short summary, the
    slowest phases as [seconds, "call|setup|teardown tests/...::test"])."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    slowest = [[float(found.group(1)), " ".join(found.group(2).split())] for found in
               (re.match(r"([\d.]+)s (\w+ +\S+)$", line) for line in lines) if found]
    return (result.returncode, lines[-1] if lines else result.stderr.strip()[-300:], failures,
            slowest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--collect_only", action="store_true")
    parser.add_argument("--workers", default="auto", help="pytest-xdist's -n")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "test_suite.json"))
    args = parser.parse_args()
    # -n 0: one process collects; xdist's workers would each collect the whole suite again.
    # pytest says e.g. "23/569 tests collected (546 deselected)".
    _, slow, _, _ = pytest("--collect-only", "-n", "0", "-m", "slow")
    found = re.search(r"(\d+)/(\d+) tests? collected", slow)
    if not found:
        raise SystemExit(f"pytest --collect-only did not count the tests: {slow}")
    slow_count, total = int(found.group(1)), int(found.group(2))
    report = {
        "command": " ".join(["python benchmarks/test_suite.py"] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": machine.git_commit(REPO_ROOT),
        "tree_changed": machine.git_tree_changed(REPO_ROOT),
        "machine": {"cpu": machine.cpu_kind(), "cpu_count": os.cpu_count()},
        "tests": total, "slow_tests": slow_count, "default_tests": total - slow_count,
    }
    if not args.collect_only:
        loads = [os.getloadavg()]
        start = time.perf_counter()
        code, summary, failures, slowest = pytest(f"--durations={SLOWEST}", "-n", args.workers)
        report.update({"wall_seconds": time.perf_counter() - start, "exit_code": code,
                       "workers": args.workers, "summary": summary, "failures": failures,
                       "slowest": slowest,
                       "load_averages_before_after": loads + [os.getloadavg()]})
    atomic_files.write_json(args.out, report)
    print(*report.get("failures", []), sep="\n")
    print(f"{report['default_tests']} default tests, {report['slow_tests']} slow; wrote {args.out}")


if __name__ == "__main__":
    main()
