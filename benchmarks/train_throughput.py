"""Training throughput (images/s) on this machine: single ResNet vs OKDDip groups.

    python benchmarks/train_throughput.py [--backbone=resnet32] [--batch_size=128] [--steps=12]

Data are random uint8 images already in memory, so the numbers measure the model's training step
alone (benchmarks/input_pipeline.py measures the input pipeline). Writes
benchmarks/results/train_throughput_<backbone>.json. Where the time goes is read off the
variants: `independent` has the group's architecture without distillation, so okddip - independent
is the cost of the attention and the KL terms; forward_only times inference of the same model.
"""

import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import okddip_tf  # noqa: E402

flags.DEFINE_string("backbone", "resnet32", "Backbone.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("steps", 12, "Timed steps per variant (after 3 warm-up steps).")
flags.DEFINE_integer("num_classes", 100, "Classes.")
FLAGS = flags.FLAGS

VARIANTS = {
    "single": dict(method="baseline", num_students=1),
    "independent_branch_4": dict(method="independent", num_students=4, sharing="branch"),
    "okddip_branch_4": dict(method="okddip", num_students=4, sharing="branch"),
    "okddip_network_4": dict(method="okddip", num_students=4, sharing="network"),
}


def time_steps(step, batches, warmup=3):
    for i in range(warmup):
        step(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(FLAGS.steps):
        step(batches[i % len(batches)])
    return (time.perf_counter() - start) / FLAGS.steps


def measure(variant):
    keras.utils.set_random_seed(0)
    group = okddip_tf.GroupModel(backbone=FLAGS.backbone, num_classes=FLAGS.num_classes,
                                 image_shape=(32, 32, 3), **variant)
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=390))
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.integers(0, 256, (FLAGS.batch_size, 32, 32, 3), dtype=np.uint8)),
                tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), dtype=tf.int32))
               for _ in range(3)]
    train_step = tf.function(group.train_step)
    predict = tf.function(lambda x: group(x, training=False))
    seconds = time_steps(lambda b: train_step(b)["loss"].numpy(), batches)
    forward = time_steps(lambda b: tf.nest.map_structure(np.asarray, predict(b[0])), batches)
    return {
        "trainable_params": int(sum(np.prod(v.shape) for v in group.trainable_variables)),
        "train_step_seconds": seconds,
        "train_images_per_second": FLAGS.batch_size / seconds,
        "forward_only_images_per_second": FLAGS.batch_size / forward,
    }


def main(argv):
    del argv
    results = {name: measure(variant) for name, variant in VARIANTS.items()}
    single = results["single"]["train_step_seconds"]
    for name, result in results.items():
        result["cost_vs_single"] = result["train_step_seconds"] / single
        print(f"{name:<22} {result['train_images_per_second']:8.1f} img/s  "
              f"{result['cost_vs_single']:5.2f}x single")
    report = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                    "keras": keras.__version__},
        "backbone": FLAGS.backbone,
        "batch_size": FLAGS.batch_size,
        "timed_steps": FLAGS.steps,
        "results": results,
    }
    out = os.path.join(os.path.dirname(__file__), "results", f"train_throughput_{FLAGS.backbone}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    app.run(main)
