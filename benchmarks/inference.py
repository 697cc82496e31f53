"""Inference cost on this CPU: the exported leader in every format vs one network built directly.

    python benchmarks/inference.py [--backbone=resnet32] [--checkpoint=RUN/checkpoints/last.keras]

Measures latency at batch 1 (median and 90th percentile over --latency_runs calls) and
throughput at batch 64 of: the whole Keras group (what deploying all students would cost), the
Keras leader, a single network of the same backbone built directly from the backbone registry
(no GroupModel), the exported SavedModel (serving_default) and each exported .tflite file
(LiteRT, --num_threads threads). Random uint8 images; a 4-student OKDDip group with random
weights unless --checkpoint is given (weights do not change the cost; the int8 file is then
calibrated on random images). Writes benchmarks/results/inference.json.
"""

import datetime
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import okddip_tf  # noqa: E402  (first: it sets the oneDNN default before TensorFlow loads)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from okddip_tf.reproduce import machine  # noqa: E402
from okddip_tf.deploy import export, tflite  # noqa: E402
from okddip_tf.models import get_backbone  # noqa: E402

flags.DEFINE_string("backbone", "resnet32", "Backbone of the random-weight group.")
flags.DEFINE_string("checkpoint", None, "A .keras group checkpoint instead of random weights.")
flags.DEFINE_integer("num_classes", 100, "Classes of the random-weight group.")
flags.DEFINE_integer("latency_runs", 200, "Timed batch-1 calls per variant.")
flags.DEFINE_integer("throughput_runs", 20, "Timed batch-64 calls per variant.")
flags.DEFINE_integer("batch_size", 64, "Batch size of the throughput measurement.")
flags.DEFINE_integer("num_threads", None, "LiteRT threads (default: all cores).")
FLAGS = flags.FLAGS
SHAPE = (32, 32, 3)


def single_network(backbone, num_classes, pixel_mean, pixel_std):
    """One student network built straight from the backbone registry: images -> logits."""
    spec = get_backbone(backbone)
    images = keras.Input(SHAPE, name="images")
    normalized = okddip_tf.PixelNormalization(pixel_mean, pixel_std)(images)
    features = spec.build_trunk("trunk", False)(normalized)
    _, logits = spec.build_head("head", num_classes, False)(features)
    return keras.Model(images, logits, name=f"single_{backbone}")


def keras_runner(model):
    function = tf.function(lambda images: model(images, training=False))
    return lambda images: tf.nest.map_structure(np.asarray, function(tf.constant(images)))


def saved_model_runner(directory):
    signature = tf.saved_model.load(directory).signatures["serving_default"]
    return lambda images: signature(images=tf.constant(images, tf.float32))["logits"].numpy()


def measure(run, images):
    one, batch = images[:1], images[:FLAGS.batch_size]
    for _ in range(10):
        run(one)
    seconds = []
    for _ in range(FLAGS.latency_runs):
        start = time.perf_counter()
        run(one)
        seconds.append(time.perf_counter() - start)
    for _ in range(3):
        run(batch)
    start = time.perf_counter()
    for _ in range(FLAGS.throughput_runs):
        run(batch)
    elapsed = time.perf_counter() - start
    return {"latency_ms_batch1_median": 1000 * float(np.median(seconds)),
            "latency_ms_batch1_p90": 1000 * float(np.percentile(seconds, 90)),
            f"throughput_images_per_s_batch{FLAGS.batch_size}":
                FLAGS.batch_size * FLAGS.throughput_runs / elapsed}


def build_group():
    if FLAGS.checkpoint:
        return export.load_group(FLAGS.checkpoint)
    keras.utils.set_random_seed(0)
    return okddip_tf.GroupModel(backbone=FLAGS.backbone, num_classes=FLAGS.num_classes,
                                num_students=4, method="okddip", image_shape=SHAPE)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # SavedModel writing logs every step at INFO
    group = build_group()
    single = single_network(group.backbone_name, group.num_classes, group.normalizer.mean,
                            group.normalizer.std)
    images = np.random.default_rng(0).integers(0, 256, (FLAGS.batch_size,) + SHAPE, np.uint8)
    with tempfile.TemporaryDirectory() as root:
        report = export.export_leader(group, root, representative_images=images)
        directory = report["directory"]
        runners = {"keras_group_all_students": keras_runner(group),
                   "keras_leader": keras_runner(group.leader),
                   f"keras_single_{group.backbone_name}_built_directly": keras_runner(single),
                   "saved_model": saved_model_runner(directory)}
        for fmt in tflite.FORMATS:
            classifier = tflite.TFLiteClassifier(
                os.path.join(directory, f"leader_{fmt}.tflite"), num_threads=FLAGS.num_threads)
            runners[f"tflite_{fmt}"] = classifier
        results = {}
        for name, run in runners.items():
            results[name] = measure(run, images)
            print(f"{name:<36} {results[name]['latency_ms_batch1_median']:7.2f} ms  "
                  f"{results[name][f'throughput_images_per_s_batch{FLAGS.batch_size}']:8.1f} img/s")
    sizes = {name: row["size_bytes"] for name, row in report["artefacts"].items()}
    for name in results:
        if name.startswith("tflite_"):
            results[name]["size_bytes"] = sizes[name[len("tflite_"):]]
    results["saved_model"]["size_bytes"] = sizes["saved_model"]
    leader = results["keras_leader"]
    direct = results[f"keras_single_{group.backbone_name}_built_directly"]
    throughput = f"throughput_images_per_s_batch{FLAGS.batch_size}"
    output = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine.describe(),
                    "litert_threads": FLAGS.num_threads or os.cpu_count()},
        "model": {"backbone": group.backbone_name, "method": group.method_name,
                  "num_students": group.num_students, "sharing": group.sharing,
                  "weights": "checkpoint" if FLAGS.checkpoint else "random",
                  "group_parameters": group.count_params(),
                  "leader_parameters": group.leader.count_params(),
                  "single_network_parameters": single.count_params()},
        "leader_vs_single_network": {
            "latency_ratio": (leader["latency_ms_batch1_median"]
                              / direct["latency_ms_batch1_median"]),
            "throughput_ratio": leader[throughput] / direct[throughput]},
        "results": results,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "inference.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(output, f, indent=2)
        f.write("\n")
    print("leader vs single network:", output["leader_vs_single_network"])
    print("wrote", out)


if __name__ == "__main__":
    app.run(main)
