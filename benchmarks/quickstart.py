"""The README's first command, timed: `okddip train --config=configs/quickstart.py`.

    python benchmarks/quickstart.py [--config=configs/quickstart.py] [--out=PATH]

Runs the command in a fresh process on a temporary workdir, as a new user would after
`pip install -e .` (TensorFlow start-up, data loading, 3 epochs on 25,000 CIFAR-100 images, an
evaluation of the 10,000-image test split after each, and the export of the leader with its
parity report), and writes benchmarks/results/quickstart.json: the wall clock and the child's
CPU seconds, the final epoch's test metrics (metrics.json), each exported artefact's size,
accuracy and agreement (export_report.json), the machine, the load averages before and after,
the command, the date and the commit. Set TFDS_DATA_DIR to the prepared CIFAR-100.
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402

ARTEFACT_KEYS = ("size_bytes", "accuracy", "top1_agreement", "max_abs_logit_diff")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "quickstart.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, "quickstart")
        command = [sys.executable, "-m", "okddip_tf.cli", "train", f"--config={args.config}",
                   f"--workdir={workdir}"]
        loads = [os.getloadavg()]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                check=False)
        wall = time.perf_counter() - start
        loads.append(os.getloadavg())
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        metrics = atomic_files.read_json(os.path.join(workdir, "metrics.json"))
        export_dir = os.path.join(workdir, "export", "leader")
        version = max(os.listdir(export_dir), key=int)
        with open(os.path.join(export_dir, version, "export_report.json"), encoding="utf-8") as f:
            exported = json.load(f)
    report = {
        "command": f"okddip train --config={args.config} --workdir=runs/quickstart",
        "measured_with": " ".join(["python benchmarks/quickstart.py"] + sys.argv[1:]),
        "includes": "TensorFlow start-up, data loading, every epoch with its test-split "
                    "evaluation, and the export with its parity report",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": machine.git_commit(REPO_ROOT),
        "tree_changed": machine.git_tree_changed(REPO_ROOT),
        "machine": {"cpu": machine.cpu_kind(), "cpu_count": os.cpu_count(),
                    "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS",
                                                            "unset (okddip_tf sets 1)")},
        "load_averages_before_after": loads,
        "wall_clock_seconds": wall,
        "child_user_cpu_seconds": usage.ru_utime,
        "child_system_cpu_seconds": usage.ru_stime,
        "epochs": metrics["epochs"],
        "test_split_final_epoch": metrics["final_epoch"],
        "reporting": metrics["reporting"],
        "export": {name: {key: artefact.get(key) for key in ARTEFACT_KEYS}
                   for name, artefact in exported["artefacts"].items()},
    }
    atomic_files.write_json(args.out, report)
    final = metrics["final_epoch"]
    print(f"{wall:.0f} s wall; leader accuracy {final['leader_accuracy']:.4f} after "
          f"{metrics['epochs']} epochs; wrote {args.out}")


if __name__ == "__main__":
    main()
