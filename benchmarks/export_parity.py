"""The export's parity table: what each exported format of a trained leader gives on the test split.

    python benchmarks/export_parity.py [--workdir=tests/fixtures/cifar100_resnet20_baseline]
        [--name=resnet20_30_epochs]

Runs `okddip export` (okddip_tf.deploy.export.export_workdir, the defaults: every format, the run's
evaluation split, int8 calibrated on the first 1,000 training images with percentile ranges) on
an `okddip train` workdir into a temporary directory and keeps its export report: per artefact
the size, top-1 agreement with the Keras leader, test accuracy and the largest differences of
probabilities and logits (the int8 file also its `clear_margin` entry). These are the numbers of
export/README.md's table; tests/test_export.py asserts their bounds on the same fixture.
Writes benchmarks/results/export_parity_<name>.json with the machine, versions, command, date
and git commit.
"""

import os
import sys
import tempfile
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_group_step  # noqa: E402  (imports okddip_tf, then TensorFlow)

from okddip_tf.deploy import export, interpreter, parity  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join("tests", "fixtures", "cifar100_resnet20_baseline")
flags.DEFINE_string("workdir", FIXTURE, "An `okddip train` workdir (relative to the repository).")
flags.DEFINE_string("name", "resnet20_30_epochs", "Result name.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = FLAGS.workdir if os.path.isabs(FLAGS.workdir) else os.path.join(REPO_ROOT,
                                                                             FLAGS.workdir)
    shown = os.path.relpath(workdir, REPO_ROOT)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        report = export.export_workdir(workdir, export_dir=scratch)
    seconds = time.perf_counter() - start
    print(parity.format_report(report))
    report.pop("directory", None)
    machine = tf_group_step.machine()
    machine["tflite_interpreter"] = interpreter.describe()
    # Only export_seconds depends on the load; every other number is a property of the files.
    machine["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    tf_group_step.write_json({
        "command": " ".join(["python benchmarks/export_parity.py",
                             f"--workdir={shown if not shown.startswith('..') else 'RUN'}",
                             f"--name={FLAGS.name}"]),
        "machine": machine,
        "export_seconds": round(seconds, 1),
        "report": report,
    }, f"export_parity_{tf_group_step.safe_name(FLAGS.name)}.json")


if __name__ == "__main__":
    app.run(main)
