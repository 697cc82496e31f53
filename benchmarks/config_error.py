"""How long `okddip train` takes to report a config error, in trees of this repository.

    python benchmarks/config_error.py --tree=before=PATH --tree=after=. [--repeats=5]

Each tree's `python -m okddip_tf.cli train --config=configs/quickstart.py
--config.train.epochs=0` runs `--repeats` times, the trees interleaved so that a change of load
hits them alike; each run is checked to exit 2 with the config error. Writes
benchmarks/results/config_error.json: per tree its commit, the wall seconds of each run and
their median, whether the run imported TensorFlow; and the machine, the load averages before and
after, the command and the date. A "before" tree is a checkout of an older commit (e.g. `git
worktree add /tmp/before <commit>`); only the code there runs, with this interpreter.
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402

ERROR = "train.epochs must be >= 1"
# Run inside the measured process: did the error come before TensorFlow was imported?
PROBE = ("import runpy, sys\n"
         "sys.argv = ['okddip', *sys.argv[1:]]\n"
         "try:\n"
         "    runpy.run_module('okddip_tf.cli', run_name='__main__')\n"
         "finally:\n"
         "    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n")


def run_once(tree, workdir):
    """(wall seconds, whether TensorFlow was imported) of one config error in `tree`."""
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-c", PROBE, "train", "--config=configs/quickstart.py",
               f"--workdir={workdir}", "--config.train.epochs=0"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                            check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 2 or ERROR not in result.stderr:
        raise SystemExit(f"{tree}: expected exit 2 with {ERROR!r}, got {result.returncode}:\n"
                         f"{result.stderr[-2000:]}")
    return seconds, "tensorflow imported: True" in result.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", action="append", required=True,
                        help="LABEL=PATH of a checkout to time (repeat the flag)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "config_error.json"))
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    trees = {label: os.path.abspath(path) for label, path in trees.items()}
    load_before = os.getloadavg()
    seconds = {label: [] for label in trees}
    imported = {}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for label, tree in trees.items():
                took, imported[label] = run_once(tree, workdir)
                seconds[label].append(took)
    report = {
        "command": " ".join(["python benchmarks/config_error.py"] + sys.argv[1:]),
        "measured": "okddip train --config=configs/quickstart.py --config.train.epochs=0 "
                    "(a config error: exit 2)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": machine.cpu_kind(), "cpu_count": os.cpu_count()},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "trees": {label: {"commit": machine.git_commit(tree),
                          "tree_changed": machine.git_tree_changed(tree),
                          "seconds": seconds[label],
                          "median_seconds": statistics.median(seconds[label]),
                          "tensorflow_imported": imported[label]}
                  for label, tree in trees.items()},
    }
    atomic_files.write_json(args.out, report)
    for label, entry in report["trees"].items():
        print(f"{label}: median {entry['median_seconds']:.2f} s over {args.repeats} runs, "
              f"TensorFlow imported: {entry['tensorflow_imported']}")


if __name__ == "__main__":
    main()
