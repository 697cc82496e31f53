"""Training throughput (images/s) on this machine: single ResNet vs OKDDip groups.

    python benchmarks/train_throughput.py [--backbone=resnet32] [--batch_size=128] [--steps=12]
        [--precision=float32|mixed_float16|mixed_bfloat16] [--jit_compile]
    python benchmarks/train_throughput.py --mode=precision [--rounds=3]
    python benchmarks/train_throughput.py --mode=architectures [--steps=3] [--rounds=2]

Data are random uint8 images already in memory, so the numbers measure the model's training step
alone (benchmarks/input_pipeline.py measures the input pipeline). Writes
benchmarks/results/train_throughput_<backbone>.json. Where the time goes is read off the
variants: `independent` has the group's architecture without distillation, so okddip - independent
is the cost of the attention and the KL terms; forward_only times inference of the same model.

--mode=precision times okddip_branch_4 and single under float32, mixed_bfloat16 and float32 with
XLA (jit_compile), all built and warmed up first, then timed in interleaved rounds so that a
change in the machine's load hits every setting alike; it reports each round and the median, plus
the load averages, into benchmarks/results/train_throughput_<backbone>_precision.json.
(TensorFlow vs the JAX backend: see benchmarks/jax_epoch.py.)

--mode=architectures covers every network of the paper (and a keras.applications model through
okddip_tf.models.from_keras): for each, one network (baseline) and the branch-based OKDDip group
of 4 are built, warmed up, then timed in interleaved rounds, so the group's cost relative to one
network is measured under the same load. CIFAR networks train on 32x32 images, ResNet-34 on
224x224 with a smaller batch; benchmarks/results/train_throughput_architectures.json.
"""

import datetime
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import okddip_tf  # noqa: E402  (first: it sets the oneDNN default before TensorFlow loads)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402

flags.DEFINE_string("backbone", "resnet32", "Backbone.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("steps", 12, "Timed steps per variant (after 3 warm-up steps).")
flags.DEFINE_integer("num_classes", 100, "Classes.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy the models are built under.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the timed train step and forward pass.")
flags.DEFINE_enum("mode", "variants", ["variants", "precision", "architectures"],
                  "variants: the four models; precision: precision/XLA settings (see above).")
flags.DEFINE_integer("rounds", 3, "--mode=precision: interleaved timing rounds.")
FLAGS = flags.FLAGS

# --mode=precision: the models and settings it times.
PRECISION_VARIANTS = ("okddip_branch_4", "single")
SETTINGS = {
    "float32": dict(precision="float32", jit_compile=False),
    "mixed_bfloat16": dict(precision="mixed_bfloat16", jit_compile=False),
    "float32_xla": dict(precision="float32", jit_compile=True),
}

VARIANTS = {
    "single": dict(method="baseline", num_students=1),
    "independent_branch_4": dict(method="independent", num_students=4, sharing="branch"),
    "okddip_branch_4": dict(method="okddip", num_students=4, sharing="branch"),
    "okddip_network_4": dict(method="okddip", num_students=4, sharing="network"),
}


# --mode=architectures: backbone -> (classes, image size, batch size).
ARCHITECTURES = {
    "resnet32": (100, 32, 32),
    "resnet110_bottleneck": (100, 32, 32),
    "wrn20_8_bottleneck": (100, 32, 32),
    "vgg16": (100, 32, 32),
    "densenet40_12": (100, 32, 32),
    "resnet34_imagenet": (1000, 224, 4),
    "keras.applications.MobileNetV3Small": (100, 32, 32),
}
ARCHITECTURE_VARIANTS = ("single", "okddip_branch_4")


def time_steps(step, batches, warmup=3):
    for i in range(warmup):
        step(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(FLAGS.steps):
        step(batches[i % len(batches)])
    return (time.perf_counter() - start) / FLAGS.steps


def build_steps(variant, precision="float32", jit_compile=False, backbone=None, num_classes=None,
                image_size=32, batch_size=None):
    """(group, train step, forward pass, batches) of one variant built under `precision`."""
    backbone = backbone or FLAGS.backbone
    num_classes, batch_size = num_classes or FLAGS.num_classes, batch_size or FLAGS.batch_size
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        group = okddip_tf.GroupModel(backbone=backbone, num_classes=num_classes,
                                     image_shape=(image_size, image_size, 3), **variant)
        group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=390))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    shape = (batch_size, image_size, image_size, 3)
    batches = [(tf.constant(rng.integers(0, 256, shape, dtype=np.uint8)),
                tf.constant(rng.integers(0, num_classes, batch_size), dtype=tf.int32))
               for _ in range(3)]
    train_step = tf.function(group.train_step, jit_compile=jit_compile)
    predict = tf.function(lambda x: group(x, training=False), jit_compile=jit_compile)
    return (group, lambda b: train_step(b)["loss"].numpy(),
            lambda b: tf.nest.map_structure(np.asarray, predict(b[0])), batches)


def measure(variant, precision="float32", jit_compile=False):
    group, train, forward_pass, batches = build_steps(variant, precision, jit_compile)
    seconds = time_steps(train, batches)
    forward = time_steps(forward_pass, batches)
    return {
        "trainable_params": int(sum(np.prod(v.shape) for v in group.trainable_variables)),
        "train_step_seconds": seconds,
        "train_images_per_second": FLAGS.batch_size / seconds,
        "forward_only_images_per_second": FLAGS.batch_size / forward,
    }


def write(report, name):
    out = os.path.join(os.path.dirname(__file__), "results", name)
    atomic_files.write_text(out, json.dumps(report, indent=2) + "\n")  # in the order written
    print("wrote", out)


def measure_precision():
    """Every (variant, setting) built and warmed up, then timed in interleaved rounds."""
    runs, first_call = {}, {}
    for variant in PRECISION_VARIANTS:
        for setting, options in SETTINGS.items():
            start = time.perf_counter()
            _, train, _, batches = build_steps(VARIANTS[variant], **options)
            train(batches[0])  # tracing (and XLA compilation) happen here
            first_call[(variant, setting)] = time.perf_counter() - start
            runs[(variant, setting)] = (train, batches)
    rounds = {key: [] for key in runs}
    loads = [os.getloadavg()]
    for _ in range(FLAGS.rounds):
        for key, (train, batches) in runs.items():
            rounds[key].append(time_steps(train, batches, warmup=2))
        loads.append(os.getloadavg())
    results = {}
    for variant in PRECISION_VARIANTS:
        results[variant] = {}
        base = float(np.median(rounds[(variant, "float32")]))
        for setting, options in SETTINGS.items():
            seconds = float(np.median(rounds[(variant, setting)]))
            results[variant][setting] = {
                **options,
                "train_step_seconds_median": seconds,
                "train_step_seconds_per_round": rounds[(variant, setting)],
                "train_images_per_second": FLAGS.batch_size / seconds,
                "speedup_vs_float32": base / seconds,
                "build_and_first_step_seconds": first_call[(variant, setting)],
            }
            each = np.round(rounds[(variant, setting)], 3)
            print(f"{variant:<18} {setting:<16} {FLAGS.batch_size / seconds:8.1f} img/s  "
                  f"{base / seconds:5.2f}x float32  rounds {each}")
    return results, loads


def main_precision():
    results, loads = measure_precision()
    write({
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "note": ("A shared machine also loaded by other processes: load averages (1, 5, 15 min) "
                 "before the timing and after each round are in load_averages. Medians over "
                 "rounds; each round times every setting once, interleaved."),
        "load_averages": loads,
        "backbone": FLAGS.backbone,
        "batch_size": FLAGS.batch_size,
        "timed_steps_per_round": FLAGS.steps,
        "rounds": FLAGS.rounds,
        "results": results,
    }, f"train_throughput_{FLAGS.backbone}_precision.json")


def architecture_backbone(name, num_classes, image_size):
    if not name.startswith("keras.applications."):
        return name
    application = getattr(keras.applications, name.rsplit(".", 1)[1])
    model = application(weights=None, input_shape=(image_size, image_size, 3),
                        classes=num_classes)
    return okddip_tf.models.from_keras(model, split_at="expanded_conv_10_add", weights="fresh")


def main_architectures():
    results, loads = {}, [os.getloadavg()]
    for name, (num_classes, image_size, batch_size) in ARCHITECTURES.items():
        runs, params = {}, {}
        for variant in ARCHITECTURE_VARIANTS:
            group, train, _, batches = build_steps(
                VARIANTS[variant], backbone=architecture_backbone(name, num_classes, image_size),
                num_classes=num_classes, image_size=image_size, batch_size=batch_size)
            train(batches[0])  # tracing happens here
            runs[variant] = (train, batches)
            params[variant] = int(sum(np.prod(v.shape) for v in group.trainable_variables))
        rounds = {variant: [] for variant in runs}
        for _ in range(FLAGS.rounds):
            for variant, (train, batches) in runs.items():
                rounds[variant].append(time_steps(train, batches, warmup=1))
        loads.append(os.getloadavg())
        seconds = {variant: float(np.median(times)) for variant, times in rounds.items()}
        results[name] = {
            "num_classes": num_classes, "image_size": image_size, "batch_size": batch_size,
            "trainable_params": params,
            "train_step_seconds_median": seconds,
            "train_step_seconds_per_round": rounds,
            "train_images_per_second": {v: batch_size / s for v, s in seconds.items()},
            "group_cost_vs_single": seconds["okddip_branch_4"] / seconds["single"],
        }
        print(f"{name:<38} single {params['single']:>11,} params {seconds['single']:7.3f} s/step"
              f"  group {params['okddip_branch_4']:>11,} params "
              f"{seconds['okddip_branch_4']:7.3f} s/step  "
              f"{results[name]['group_cost_vs_single']:4.2f}x", flush=True)
    write({
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "note": ("Measured with few steps on a shared machine also loaded by other processes "
                 "(load averages before and after each architecture in load_averages): the "
                 "absolute times are noisy; each group-vs-single ratio comes from interleaved "
                 "rounds under the same load. Random uint8 images in memory, float32, no XLA."),
        "load_averages": loads,
        "timed_steps_per_round": FLAGS.steps,
        "rounds": FLAGS.rounds,
        "results": results,
    }, "train_throughput_architectures.json")


def main(argv):
    del argv
    if FLAGS.mode == "precision":
        return main_precision()
    if FLAGS.mode == "architectures":
        return main_architectures()
    results = {name: measure(variant, FLAGS.precision, FLAGS.jit_compile)
               for name, variant in VARIANTS.items()}
    single = results["single"]["train_step_seconds"]
    for name, result in results.items():
        result["cost_vs_single"] = result["train_step_seconds"] / single
        print(f"{name:<22} {result['train_images_per_second']:8.1f} img/s  "
              f"{result['cost_vs_single']:5.2f}x single")
    report = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "backbone": FLAGS.backbone,
        "batch_size": FLAGS.batch_size,
        "timed_steps": FLAGS.steps,
        "precision": FLAGS.precision,
        "jit_compile": FLAGS.jit_compile,
        "load_average": os.getloadavg(),
        "results": results,
    }
    suffix = "" if (FLAGS.precision, FLAGS.jit_compile) == ("float32", False) else (
        f"_{FLAGS.precision}" + ("_xla" if FLAGS.jit_compile else ""))
    write(report, f"train_throughput_{FLAGS.backbone}{suffix}.json")


if __name__ == "__main__":
    app.run(main)
