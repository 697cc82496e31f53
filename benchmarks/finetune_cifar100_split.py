"""Fine-tuning a pretrained CNN on new classes: one network beside an OKDDip group (issue 23).

    TFDS_DATA_DIR=... python benchmarks/finetune_cifar100_split.py [--seeds=0,1,2,3,4]
    python benchmarks/finetune_cifar100_split.py --npz=cifar100_jpeg.npz   # the compact copy

What a Keras user with a trained classifier does when new classes arrive:

1. Pretraining (once; the .keras file is cached in --cache_dir, outside the repository, and
   reused by later runs with the same settings): a small functional CNN of the kind a user
   writes (three blocks of two 3x3 convolutions with BatchNorm and ReLU, max pooling between
   them, global average pooling, a dense classifier; a Rescaling layer first, so it takes raw
   [0, 255] pixels) trained with plain `keras.Model.fit` on all 25,000 training images of
   CIFAR-100's classes 0-49.
2. Fine-tuning, per seed, on classes 50-99 (labels remapped to 0-49), at one small budget for
   every variant (the first --finetune_per_class training images of each class, --epochs
   epochs, batch --batch_size, SGD with Nesterov momentum and a cosine learning-rate decay, the
   CIFAR crop-and-flip augmentation):
   * `keep_single`: the pretrained network with a new classifier for the 50 new classes (made
     as Keras' transfer-learning guide makes one: the pooled features into a fresh Dense layer;
     the old classifier is dropped), `from_keras(..., weights="keep")`, trained alone (method
     "baseline");
   * `keep_group`: an OKDDip group of --students students of that model, branch-based, split
     after the second block (`block2_pool`): the students share the pretrained first two blocks
     and each owns a copy of the pretrained third block; the leader starts as exactly the
     `keep_single` network of the same seed, each peer with a classifier of its own drawn
     afresh (from_keras' rule that keeps the peers apart); the leader is deployed;
   * `fresh_single`: the same architecture from fresh weights (`weights="fresh"`), alone, to
     show what the pretraining buys at this budget.
   The new classifier is made before `from_keras` rather than by its `num_classes=`, because the
   new task has as many classes as the old one (50), and `from_keras` replaces the classifier
   only for a different number of classes.
   Branch sharing, not network sharing: it is the paper's main CIFAR setting, it keeps one copy
   of the pretrained low-level features (what fine-tuning usually keeps anyway), and it costs
   about twice one network instead of four times.
3. Accuracy on all 5,000 test images of classes 50-99, for each variant and seed.

Writes benchmarks/results/finetune_cifar100_split.json after every seed (an interrupted run keeps
the seeds it finished): per-seed accuracies, their mean and sample std, the paired differences
with a 95% t interval (`okddip_tf.reproduce.statistics.difference`), the budget, the pretraining's
own accuracy, the machine and its load averages.
"""

import datetime
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import okddip_tf  # noqa: E402  (first: the oneDNN default)
import okddip_tf.models  # noqa: E402
from okddip_tf import atomic_files, data  # noqa: E402
from okddip_tf.data import npz  # noqa: E402
from okddip_tf.reproduce import machine, statistics  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import layers  # noqa: E402

flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Fine-tuning seeds, in order.")
flags.DEFINE_string("npz", os.environ.get("OKDDIP_CIFAR100_NPZ"),
                    "CIFAR-100 as an .npz (okddip_tf.data.npz layouts); unset: tfds `cifar100` "
                    "from TFDS_DATA_DIR.")
flags.DEFINE_string("cache_dir", os.path.join(tempfile.gettempdir(), "okddip_finetune_cifar100"),
                    "Where the pretrained .keras file is kept between runs.")
flags.DEFINE_integer("pretrain_epochs", 15, "Pretraining epochs (classes 0-49, all images).")
flags.DEFINE_integer("finetune_per_class", 50, "Fine-tuning training images per new class.")
flags.DEFINE_integer("epochs", 4, "Fine-tuning epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size (pretraining and fine-tuning).")
flags.DEFINE_float("learning_rate", 0.05, "Fine-tuning's initial learning rate (cosine decay).")
flags.DEFINE_integer("students", 4, "Students of the OKDDip group.")
flags.DEFINE_integer("rampup_epochs", 1, "Epochs over which the distillation weight ramps up.")
flags.DEFINE_list("variants", ["keep_single", "keep_group", "fresh_single"], "Variants to run.")
flags.DEFINE_string("out", None, "Output JSON (default: benchmarks/results/"
                                 "finetune_cifar100_split.json).")
FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_CLASSES, NEW_CLASSES = range(0, 50), range(50, 100)
WIDTHS = (32, 64, 128)
SPLIT_AT = "block2_pool"
PRETRAIN_SEED, PRETRAIN_LEARNING_RATE = 0, 0.05


def load_split(split):
    """(uint8 images [N, 32, 32, 3], int32 labels [N]) of a CIFAR-100 split."""
    if FLAGS.npz:
        return npz.read_split(FLAGS.npz, split)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    images, labels = tfds.as_numpy(tfds.load("cifar100", split=split, as_supervised=True,
                                             batch_size=-1, download=False))
    return images, labels.astype(np.int32)


def classes_subset(images, labels, classes, per_class=None):
    """The examples of `classes` (the first `per_class` of each), labels renumbered from 0."""
    keep = np.zeros(len(labels), bool)
    for label in classes:
        keep[np.flatnonzero(labels == label)[:per_class]] = True
    return images[keep], (labels[keep] - classes[0]).astype(np.int32)


def build_cnn(num_classes):
    """The user's model: three conv blocks with BatchNorm, raw [0, 255] pixels in, logits out."""
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    for block, width in enumerate(WIDTHS, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False,
                              name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < len(WIDTHS):
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="classifier")(x), name="small_cnn")


def sgd(steps):
    """SGD with Nesterov momentum 0.9, the learning rate decayed to 0 over `steps` (cosine)."""
    return keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps),
                                momentum=0.9, nesterov=True)


def pretrained_path():
    return os.path.join(FLAGS.cache_dir, f"small_cnn_cifar100_classes0-49_"
                                         f"{FLAGS.pretrain_epochs}ep_batch{FLAGS.batch_size}.keras")


def pretrain(train, test):
    """The pretrained model's path and its record; trained and saved only when not cached."""
    path = pretrained_path()
    record_path = path + ".json"
    if os.path.isfile(path) and os.path.isfile(record_path):
        return path, atomic_files.read_json(record_path)
    images, labels = classes_subset(*train, OLD_CLASSES)
    keras.utils.set_random_seed(PRETRAIN_SEED)
    model = build_cnn(len(OLD_CLASSES))
    steps = len(labels) // FLAGS.batch_size
    model.compile(optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(
        PRETRAIN_LEARNING_RATE, steps * FLAGS.pretrain_epochs), momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    train_ds = data.make_dataset(images, labels, num_classes=len(OLD_CLASSES),
                                 batch_size=FLAGS.batch_size, training=True, seed=PRETRAIN_SEED)
    start = time.perf_counter()
    model.fit(train_ds, epochs=FLAGS.pretrain_epochs, verbose=2)
    seconds = time.perf_counter() - start
    test_images, test_labels = classes_subset(*test, OLD_CLASSES)
    _, accuracy = model.evaluate(test_images, test_labels, batch_size=256, verbose=0)
    record = {"classes": "0-49", "train_images": int(len(labels)),
              "epochs": FLAGS.pretrain_epochs, "batch_size": FLAGS.batch_size,
              "optimizer": f"SGD, Nesterov momentum 0.9, lr {PRETRAIN_LEARNING_RATE} cosine "
                           "decay to 0, no weight decay", "augmentation": "CIFAR crop and flip",
              "seed": PRETRAIN_SEED, "parameters": int(model.count_params()),
              "test_accuracy_classes_0_49": float(accuracy), "fit_seconds": round(seconds, 1),
              "load_average_after": list(os.getloadavg())}
    atomic_files.save_model(model, path)
    atomic_files.write_json(record_path, record)
    return path, record


def with_new_classifier(path, num_classes):
    """The pretrained model with a new, freshly initialised classifier for the new classes, as
    Keras' transfer-learning guide makes one (every other layer keeps its trained weights)."""
    pretrained = keras.saving.load_model(path)
    features = pretrained.get_layer("pool").output
    logits = layers.Dense(num_classes, name="new_classifier")(features)
    return keras.Model(pretrained.inputs, logits, name="small_cnn_new_classes")


def finetune(variant, seed, path, train, test):
    """Fine-tunes one variant from `seed` on the new classes; its test accuracies."""
    group_variant = variant == "keep_group"
    keras.utils.set_random_seed(seed)  # the same new classifier for keep_single and the leader
    backbone = okddip_tf.models.from_keras(
        with_new_classifier(path, len(NEW_CLASSES)), split_at=SPLIT_AT,
        weights="fresh" if variant == "fresh_single" else "keep")
    group = okddip_tf.GroupModel(
        backbone=backbone, num_classes=len(NEW_CLASSES), image_shape=(32, 32, 3),
        method="okddip" if group_variant else "baseline",
        num_students=FLAGS.students if group_variant else 1)
    steps = len(train[1]) // FLAGS.batch_size
    group.compile(optimizer=sgd(steps * FLAGS.epochs))
    callbacks = ([okddip_tf.DistillWeightRampup(length=FLAGS.rampup_epochs, per_step=True)]
                 if group_variant else [])
    train_ds = data.make_dataset(*train, num_classes=len(NEW_CLASSES),
                                 batch_size=FLAGS.batch_size, training=True, seed=seed)
    start = time.perf_counter()
    history = group.fit(train_ds, epochs=FLAGS.epochs, callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - start
    logs = group.evaluate(*test, batch_size=256, verbose=0, return_dict=True)
    result = {"accuracy": float(logs["leader_accuracy"]),
              "train_accuracy_last_epoch": float(history.history["leader_accuracy"][-1]),
              "fit_seconds": round(seconds, 1)}
    if group_variant:
        result["peer_accuracies"] = [float(logs[f"peer_{i}_accuracy"])
                                     for i in range(group.num_peers)]
        result["peer_ensemble_accuracy"] = float(logs["ensemble_accuracy"])
        result["diversity"] = float(logs["diversity"])
    return result


def summarise(runs):
    """Mean and std per variant, and the paired differences the README reads."""
    accuracies = {v: {str(run["seed"]): run[v]["accuracy"] for run in runs}
                  for v in FLAGS.variants}
    pairs = [pair for pair in (("keep_group", "keep_single"), ("keep_single", "fresh_single"))
             if set(pair) <= set(FLAGS.variants)]
    return statistics.compare_seeds(accuracies, pairs)


def budget(train):
    return {"data": (f"npz {os.path.basename(FLAGS.npz)} (okddip_tf.data.npz)" if FLAGS.npz
                     else "tfds cifar100"),
            "classes": "50-99, labels remapped to 0-49",
            "train_images": int(len(train[1])), "per_class": FLAGS.finetune_per_class,
            "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
            "optimizer": f"SGD, Nesterov momentum 0.9, lr {FLAGS.learning_rate} cosine decay "
                         "to 0 over the run, no weight decay",
            "augmentation": "CIFAR crop and flip (okddip_tf.data.make_dataset)",
            "group": {"method": "okddip", "students": FLAGS.students, "sharing": "branch",
                      "split_at": SPLIT_AT, "temperature": 3.0,
                      "distill_weight_rampup": f"per step over the first "
                                               f"{FLAGS.rampup_epochs} epoch(s)"},
            "test_images": "all 5,000 test images of classes 50-99",
            "chosen_for": "the whole run (pretraining cached) under about 40 minutes on a "
                          "loaded 2-core CPU"}


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.variants) - {"keep_single", "keep_group", "fresh_single"})
    if unknown:
        raise app.UsageError(f"Unknown variants {unknown}; choose from keep_single, keep_group, "
                             "fresh_single.")
    out = FLAGS.out or os.path.join(REPO_ROOT, "benchmarks", "results",
                                    "finetune_cifar100_split.json")
    load_before = os.getloadavg()
    train, test = load_split("train"), load_split("test")
    path, pretraining = pretrain(train, test)
    new_train = classes_subset(*train, NEW_CLASSES, FLAGS.finetune_per_class)
    new_test = classes_subset(*test, NEW_CLASSES)
    commit, tree_changed = machine.git_commit(REPO_ROOT), machine.git_tree_changed(REPO_ROOT)
    runs = []
    for seed in (int(s) for s in FLAGS.seeds):
        runs.append({"seed": seed, **{v: finetune(v, seed, path, new_train, new_test)
                                      for v in FLAGS.variants}})
        print(runs[-1], flush=True)
        atomic_files.write_json(out, {
            "what": "a small BatchNorm CNN pretrained on CIFAR-100 classes 0-49, fine-tuned on "
                    "classes 50-99 with weights='keep' as one network and as an OKDDip group "
                    "(the leader deployed), and from fresh weights as one network; test "
                    "accuracy on classes 50-99 per seed",
            "pretraining": pretraining, "budget": budget(new_train),
            "runs": runs, "summary": summarise(runs),
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
            "machine": machine.describe(), "commit": commit, "tree_changed": tree_changed,
            "command": " ".join(["python"] + sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })


if __name__ == "__main__":
    app.run(main)
