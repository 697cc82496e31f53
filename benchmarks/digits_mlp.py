"""An MLP on real tabular data, trained alone and as an OKDDip group (issue 23).

    python benchmarks/digits_mlp.py [--seeds=0,1,...,9] [--epochs=40]

The data: scikit-learn's 8x8 handwritten digits (`sklearn.datasets.load_digits`: 1,797 samples,
64 pixel-count features in 0-16, 10 classes), which ship inside the scikit-learn package, so
nothing is downloaded. Per seed, a stratified split (`train_test_split(stratify=y)`, 25% test)
drawn from the seed, the features scaled as a user would (x / 16).

The model: the functional Keras MLP a user would write, 64 -> 128 -> 128 -> 10 (ReLU), turned
into a backbone with `okddip_tf.models.from_keras(..., weights="fresh")` (trained from scratch,
as in the paper), and trained for the same
epochs, batch and optimizer (Adam, learning rate 1e-3) as:
  * `single`: one network (method "baseline": cross-entropy only);
  * `okddip_network`: an OKDDip group of --students whole networks (network-based); the leader
    is deployed. For an MLP this is the natural group: every student is 26,000 parameters, so m
    networks cost nothing much, and the peers differ in every layer;
  * `okddip_branch`: the branch-based group, split after the first hidden layer (the students
    share it and each owns the second hidden layer and a classifier).
The distillation weight ramps up over the first third of the epochs (`DistillWeightRampup`).

Writes benchmarks/results/digits_mlp.json: every seed's test accuracy for each variant (and the
groups' peer ensemble), the mean and sample std, and each group's paired difference from
`single` with a 95% t interval over the seeds (`okddip_tf.reproduce.statistics.difference`, which
says whether the seeds separate it from zero).
"""

import argparse
import datetime
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import okddip_tf  # noqa: E402  (first: the oneDNN default)
import okddip_tf.models  # noqa: E402
from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine, statistics  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("single", "okddip_network", "okddip_branch")
TEST_FRACTION = 0.25
LEARNING_RATE = 1e-3


def build_mlp():
    """The user's model: 64 features -> two hidden ReLU layers of 128 -> 10 logits."""
    features = keras.Input((64,), name="features")
    x = layers.Dense(128, activation="relu", name="hidden1")(features)
    x = layers.Dense(128, activation="relu", name="hidden2")(x)
    return keras.Model(features, layers.Dense(10, name="classifier")(x), name="digits_mlp")


def build_group(variant, students):
    """The GroupModel of a variant, from a freshly built MLP."""
    if variant == "single":
        return okddip_tf.GroupModel(
            backbone=okddip_tf.models.from_keras(build_mlp(), weights="fresh"),
            num_classes=10, num_students=1, method="baseline")
    sharing, split_at = {"okddip_network": ("network", None),
                         "okddip_branch": ("branch", "hidden1")}[variant]
    # Fresh weights for every student: a model object's own (random) weights would otherwise
    # be kept, and every network-based student would start with the same hidden layers.
    backbone = okddip_tf.models.from_keras(build_mlp(), split_at=split_at, weights="fresh")
    return okddip_tf.GroupModel(backbone=backbone, num_classes=10, num_students=students,
                                sharing=sharing)


def split(seed):
    """(x_train, y_train, x_test, y_test): a stratified split drawn from `seed`, x / 16."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    return ((x_train / 16).astype("float32"), y_train.astype("int32"),
            (x_test / 16).astype("float32"), y_test.astype("int32"))


def run_variant(variant, seed, data, *, epochs, batch_size, students):
    """Trains one variant from `seed`; its test accuracies and fit time."""
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    group = build_group(variant, students)
    group.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    callbacks = ([okddip_tf.DistillWeightRampup(length=max(1, epochs // 3))]
                 if group.distill_weight is not None else [])
    start = time.perf_counter()
    group.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
              callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    logs = group.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    result = {"accuracy": float(logs["leader_accuracy"]), "fit_seconds": round(seconds, 2)}
    if "ensemble_accuracy" in logs:
        result["peer_ensemble_accuracy"] = float(logs["ensemble_accuracy"])
        result["student_accuracies"] = [float(logs[f"peer_{i}_accuracy"])
                                        for i in range(group.num_peers)]
    return result


def summarise(runs, variants):
    """Mean and std per variant; each group's paired difference from `single` over the seeds."""
    accuracies = {v: {str(run["seed"]): run[v]["accuracy"] for run in runs} for v in variants}
    pairs = [(v, "single") for v in variants if v != "single" and "single" in variants]
    return statistics.compare_seeds(accuracies, pairs)


def run(seeds, *, epochs, batch_size, students, variants=VARIANTS, out=None):
    """Every variant on every seed; the report (also written to `out` after every seed)."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"Unknown variants {unknown}; choose from {list(VARIANTS)}.")
    load_before, runs = os.getloadavg(), []
    record = {}
    for seed in seeds:
        data = split(seed)
        runs.append({"seed": seed, **{v: run_variant(v, seed, data, epochs=epochs,
                                                     batch_size=batch_size, students=students)
                                      for v in variants}})
        record = {
            "what": "scikit-learn's 8x8 digits (1,797 samples, 64 features, 10 classes): an MLP "
                    "64-128-128-10 trained alone and as OKDDip groups of it; leader's test "
                    "accuracy per seed (a stratified 25% test split drawn from the seed)",
            "budget": {"epochs": epochs, "batch_size": batch_size,
                       "optimizer": f"Adam, learning rate {LEARNING_RATE}",
                       "distill_weight_rampup_epochs": max(1, epochs // 3),
                       "students": students, "train_samples": int(len(data[1])),
                       "test_samples": int(len(data[3])), "feature_scaling": "x / 16"},
            "runs": runs, "summary": summarise(runs, variants),
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
            "machine": machine.describe(),
            "commit": machine.git_commit(REPO_ROOT),
            "tree_changed": machine.git_tree_changed(REPO_ROOT),
            "command": " ".join(["python"] + sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if out:
            atomic_files.write_json(out, record)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9",
                        help="comma-separated seeds (split and weights)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "digits_mlp.json"))
    args = parser.parse_args()
    record = run([int(s) for s in args.seeds.split(",")], epochs=args.epochs,
                 batch_size=args.batch_size, students=args.students,
                 variants=tuple(args.variants.split(",")), out=args.out)
    for variant, value in record["summary"].items():
        print(variant, value)


if __name__ == "__main__":
    main()
