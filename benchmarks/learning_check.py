"""What tests/test_methods.py::test_okddip_learns_on_real_cifar100 reaches, over a few seeds.

    TFDS_DATA_DIR=... python benchmarks/learning_check.py [--seeds=0,1,2]

Runs the test's training exactly (`paper_config("cifar100", "okddip", "smoke")`, 3 students,
the first 10,000 training images, batch 64, shuffle buffer 10,000, 3 epochs at learning rate
0.05 with no drops, accuracy on the first 1,000 test images), once per --seeds value as
`config.train.seed` (the test itself runs seed 0, the config's default). For each seed it
records the final epoch's leader, student-mean and ensemble accuracy and the first and last
epoch's training loss; then the test's threshold (3.5% on 1,000 images) in binomial standard
deviations, sqrt(p(1-p)/1000), below the lowest and the mean accuracy measured.

The JSON is rewritten after every seed, so an interrupted run keeps the seeds it finished.
Writes benchmarks/results/learning_check.json.
"""

import datetime
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from okddip_tf import atomic_files  # noqa: E402  (first: the oneDNN default)
from okddip_tf import config as base_config  # noqa: E402
from okddip_tf import train  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_list("seeds", ["0", "1", "2"], "Values of config.train.seed to run, in order.")
flags.DEFINE_string("out", None, "Output JSON (default: benchmarks/results/learning_check.json).")
FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THRESHOLD = 0.035  # the test's: 3.5x chance on 100 classes
TEST_IMAGES = 1_000


def test_config(seed):
    """The test's config, with `seed` as the training seed."""
    config = base_config.paper_config("cifar100", "okddip", "smoke")
    config.data.data_dir = os.environ["TFDS_DATA_DIR"]
    config.data.train_examples, config.data.eval_examples = 10_000, TEST_IMAGES
    config.data.batch_size, config.data.shuffle_buffer = 64, 10_000
    config.model.num_students = 3
    config.train.epochs, config.train.verbose, config.train.probe_images = 3, 0, 0
    config.optim.learning_rate, config.optim.drop_epochs = 0.05, ()
    config.train.seed = seed
    return config


def run_seed(seed):
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        _, history, metrics = train.train_and_evaluate(test_config(seed), workdir)
    final = metrics["final_epoch"]
    return {
        "seed": seed,
        "leader_accuracy": float(final["leader_accuracy"]),
        "student_accuracy": float(final["student_accuracy"]),
        "ensemble_accuracy": float(final["ensemble_accuracy"]),
        "first_epoch_loss": float(history["loss"][0]),
        "last_epoch_loss": float(history["loss"][-1]),
        "seconds": round(time.perf_counter() - start, 1),
    }


def sds_below(accuracy):
    """How many binomial standard deviations (at `accuracy`, over TEST_IMAGES) THRESHOLD is
    below `accuracy`."""
    return (accuracy - THRESHOLD) / math.sqrt(accuracy * (1 - accuracy) / TEST_IMAGES)


def summary(runs):
    lowest = min(min(r["leader_accuracy"], r["student_accuracy"], r["ensemble_accuracy"])
                 for r in runs)
    leaders = [r["leader_accuracy"] for r in runs]
    mean = sum(leaders) / len(leaders)
    return {
        "seeds_run": len(runs),
        "leader_accuracy_min": min(leaders), "leader_accuracy_max": max(leaders),
        "leader_accuracy_mean": mean,
        "lowest_asserted_accuracy": lowest,
        "threshold_sds_below_lowest": round(sds_below(lowest), 2),
        "threshold_sds_below_leader_mean": round(sds_below(mean), 2),
    }


def main(argv):
    del argv
    out = FLAGS.out or os.path.join(REPO_ROOT, "benchmarks", "results", "learning_check.json")
    load_before, runs = os.getloadavg(), []
    commit, tree_changed = machine.git_commit(REPO_ROOT), machine.git_tree_changed(REPO_ROOT)
    for seed in (int(s) for s in FLAGS.seeds):
        runs.append(run_seed(seed))
        print(json.dumps(runs[-1]), flush=True)
        atomic_files.write_json(out, {
            "what": "tests/test_methods.py::test_okddip_learns_on_real_cifar100's training (3-"
                    "student OKDDip, smoke size, 3 epochs on the first 10,000 CIFAR-100 training "
                    "images, lr 0.05), final-epoch accuracy on the first 1,000 test images, per "
                    "seed; the test asserts each accuracy >= 0.035",
            "threshold": THRESHOLD, "test_images": TEST_IMAGES,
            "runs": runs, "summary": summary(runs),
            "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
            "machine": machine.describe(),
            "commit": commit, "tree_changed_at_start": tree_changed,
            "command": " ".join(["python"] + sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })


if __name__ == "__main__":
    app.run(main)
