"""Does the README's own-model example train stably for an epoch on real CIFAR-100? (issue 25)

    TFDS_DATA_DIR=... python benchmarks/own_model_stability.py [--train_images=5000]

A branch OKDDip group of 4 of keras.applications.MobileNetV3Small (weights=None, 32x32, 100
classes, split at expanded_conv_10_add), `okddip_tf.paper_sgd`, batch 128, one epoch on the
first --train_images CIFAR-100 training images (tfds `cifar100`), each variant from the same
seed and initial weights:

* `readme_as_written`: no ramp-up callback, as the README's own-model example shows;
* `rampup`: with `okddip_tf.DistillWeightRampup(length=80)`, what `GroupModel.fit` recommends.

Each records the training loss after every step (the epoch's running mean Keras logs, and the
step's own loss derived from it), whether it is finite, where the NaN guard stopped the fit,
the leader's training accuracy over the epoch, and its accuracy on the first --test_images test
images after the epoch (for a stopped fit: with the weights the guard put back; after 40 steps
MobileNetV3's BatchNorm moving statistics, momentum 0.999, are still mostly their initial values,
so this is near chance). Writes benchmarks/results/own_model_stability.json.
"""

import datetime
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import okddip_tf  # noqa: E402  (first: the oneDNN default)
import okddip_tf.models  # noqa: E402
from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_integer("train_images", 5000, "Training images (the first ones of the split).")
flags.DEFINE_integer("test_images", 2000, "Test images for the final accuracy.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the shuffling.")
flags.DEFINE_list("variants", ["readme_as_written", "rampup"], "Variants to run.")
flags.DEFINE_string("out", None, "Output JSON (default: benchmarks/results/...).")
FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT_AT = "expanded_conv_10_add"


class StepLosses(keras.callbacks.Callback):
    """Records the logged running-mean loss after every training step."""

    def __init__(self):
        super().__init__()
        self.running = []

    def on_train_batch_end(self, batch, logs=None):
        self.running.append(float((logs or {}).get("loss", float("nan"))))
        self.train_leader_accuracy = float((logs or {}).get("leader_accuracy", float("nan")))


def step_losses(running):
    """The step's own loss from the epoch's running means: (k+1) m_k - k m_{k-1}."""
    result, previous = [], 0.0
    for k, mean in enumerate(running):
        result.append((k + 1) * mean - k * previous)
        previous = mean
    return result


def finite_or_none(value):
    return value if math.isfinite(value) else None


def load(split, count):
    images, labels = [], []
    for image, label in tfds.as_numpy(tfds.load("cifar100", split=f"{split}[:{count}]",
                                                as_supervised=True)):
        images.append(image)
        labels.append(label)
    return np.stack(images), np.asarray(labels, "int32")


def build_group(seed):
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=100)
    backbone = okddip_tf.models.from_keras(base, split_at=SPLIT_AT, weights="fresh")
    return okddip_tf.GroupModel(backbone=backbone, num_classes=100, image_shape=(32, 32, 3))


def run_variant(name, train, test, steps_per_epoch):
    group = build_group(FLAGS.seed)
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=steps_per_epoch))
    recorder = StepLosses()
    callbacks = [recorder, okddip_tf.NaNGuard(keep_last_good=True)]
    if name == "rampup":
        callbacks.insert(0, okddip_tf.DistillWeightRampup(length=80))
    elif name != "readme_as_written":
        raise ValueError(f"Unknown variant {name!r}.")
    train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(
        len(train[1]), seed=FLAGS.seed).batch(FLAGS.batch_size)
    stopped, start = None, time.perf_counter()
    try:
        group.fit(train_ds, epochs=1, verbose=0, callbacks=callbacks)
    except FloatingPointError as error:
        stopped = str(error)
    seconds = time.perf_counter() - start
    metrics = group.evaluate(*test, batch_size=FLAGS.batch_size, verbose=0, return_dict=True)
    own = step_losses(recorder.running)
    finite = [math.isfinite(v) for v in recorder.running]
    first_bad = finite.index(False) if False in finite else None
    return {
        "rampup_callback": name == "rampup",
        "steps_run": len(recorder.running),
        "all_steps_finite": first_bad is None,
        "first_non_finite_step": first_bad,
        "nan_guard_stopped": stopped,
        "loss_running_mean_per_step": [finite_or_none(v) for v in recorder.running],
        "loss_per_step": [finite_or_none(v) for v in own],
        "loss_finite_per_step": finite,
        "train_leader_accuracy_epoch_mean": recorder.train_leader_accuracy,
        "final_leader_accuracy": float(metrics["leader_accuracy"]),
        "final_ensemble_accuracy": float(metrics.get("ensemble_accuracy", float("nan"))),
        "final_test_loss": finite_or_none(float(metrics["loss"])),
        "fit_seconds": round(seconds, 1),
    }


def main(argv):
    del argv
    load_before = os.getloadavg()
    train = load("train", FLAGS.train_images)
    test = load("test", FLAGS.test_images)
    steps_per_epoch = math.ceil(len(train[1]) / FLAGS.batch_size)
    results = {name: run_variant(name, train, test, steps_per_epoch) for name in FLAGS.variants}
    record = {
        "what": "README own-model example (MobileNetV3Small, weights=None, 32x32, 100 classes, "
                f"split_at={SPLIT_AT}, branch OKDDip group of 4, paper_sgd, batch "
                f"{FLAGS.batch_size}) for one epoch on the first {FLAGS.train_images} CIFAR-100 "
                f"training images; accuracy on the first {FLAGS.test_images} test images",
        "train_images": int(len(train[1])), "test_images": int(len(test[1])),
        "batch_size": FLAGS.batch_size, "steps_per_epoch": steps_per_epoch, "seed": FLAGS.seed,
        "variants": results,
        "cpu": machine.cpu_kind(),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "machine": machine.describe(),
        "command": " ".join(["python"] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = FLAGS.out or os.path.join(REPO_ROOT, "benchmarks", "results",
                                    "own_model_stability.json")
    atomic_files.write_json(out, record)
    for name, result in results.items():
        print(name, {k: v for k, v in result.items() if not k.endswith("per_step")})


if __name__ == "__main__":
    app.run(main)
