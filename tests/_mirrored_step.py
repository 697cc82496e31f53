"""Helper for test_group.py: one training step on 1 device vs MirroredStrategy on 2 logical CPUs.

Run as `python tests/_mirrored_step.py OUT_DIR [SEED]` (SEED 0 by default, as test_group.py runs it). Splitting the CPU into two logical devices must
happen before TensorFlow initialises, hence a separate process. Writes OUT_DIR/result.json with
the relative L2 differences of the updates (new weights - initial weights) between one replica and
two replicas, with synchronised BatchNorm ("auto" under the strategy) and with sync switched off.
"""

import contextlib
import json
import pathlib
import sys

import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from okddip_tf import CoupledSGD, GroupModel  # noqa: E402

BACKBONE = "resnet20"
NUM_CLASSES = 10
NUM_STUDENTS = 4
GLOBAL_BATCH = 32
IMAGE_SHAPE = (32, 32, 3)
MOVING_STATS = ("moving_mean", "moving_variance")


def make_batch(seed=0):
    """Images whose per-image colour varies, so half-batch BatchNorm statistics differ."""
    rng = np.random.default_rng(1234 + seed)
    offsets = rng.uniform(-90.0, 90.0, size=(GLOBAL_BATCH, 1, 1, 3))
    noise = rng.normal(0.0, 40.0, size=(GLOBAL_BATCH,) + IMAGE_SHAPE)
    images = np.clip(128.0 + offsets + noise, 0, 255).astype("uint8")
    labels = rng.integers(0, NUM_CLASSES, size=(GLOBAL_BATCH,)).astype("int32")
    return images, labels


def build(sync_batchnorm):
    return GroupModel(
        backbone=BACKBONE,
        num_classes=NUM_CLASSES,
        num_students=NUM_STUDENTS,
        image_shape=IMAGE_SHAPE,
        sync_batchnorm=sync_batchnorm,
    )


def tracked(group):
    """(path, variable) for every trainable weight and every BatchNorm moving statistic."""
    chosen = []
    for i, variable in enumerate(group.weights):
        if variable.trainable or variable.path.rsplit("/", 1)[-1] in MOVING_STATS:
            # Paths repeat across the students' heads: the index makes the key unique.
            chosen.append((f"{i:04d}/{variable.path}", variable))
    return chosen


def batchnorm_layers(group):
    found = []
    for model in [*group.trunks, *group.heads]:
        found += [layer for layer in model.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    return found


def one_step(init_path, strategy, sync_batchnorm, seed=0):
    images, labels = make_batch(seed)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        group = build(sync_batchnorm)
        group.load_weights(init_path)
        group.distill_weight.assign(1.0)
        # A plain SGD step (no momentum, no decay): the update is -0.1 x the gradient, and
        # momentum buffers would triple the tracing time.
        group.compile(optimizer=CoupledSGD(learning_rate=0.1, momentum=0.0, nesterov=False, l2=0.0))
    synchronized = [layer.synchronized for layer in batchnorm_layers(group)]
    before = {path: np.array(v.numpy()) for path, v in tracked(group)}
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        GLOBAL_BATCH, drop_remainder=True
    )
    history = group.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    after = {path: np.array(v.numpy()) for path, v in tracked(group)}
    updates = {path: (after[path] - before[path]).astype("float64") for path in before}
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return {
        "updates": updates,
        "loss": float(history.history["loss"][-1]),
        "replicas": replicas,
        "all_synchronized": all(synchronized),
        "any_synchronized": any(synchronized),
        "num_batchnorm": len(synchronized),
    }


def relative_difference(reference, other, keep):
    paths = [path for path in reference["updates"] if keep(path)]
    assert paths and paths == [p for p in other["updates"] if keep(p)], "weight paths differ"
    ref = np.concatenate([reference["updates"][p].ravel() for p in paths])
    oth = np.concatenate([other["updates"][p].ravel() for p in paths])
    return float(np.linalg.norm(oth - ref) / np.linalg.norm(ref)), float(np.linalg.norm(ref))


def main(out_dir, seed=0):
    out_dir = pathlib.Path(out_dir)
    keras.utils.set_random_seed(seed)
    init_path = str(out_dir / "init.weights.h5")
    build(False).save_weights(init_path)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = one_step(init_path, None, "auto", seed)
    synced = one_step(init_path, strategy, "auto", seed)
    unsynced = one_step(init_path, strategy, False, seed)

    def is_stat(path):
        return path.rsplit("/", 1)[-1] in MOVING_STATS

    result = {"seed": seed, "replicas": [single["replicas"], synced["replicas"], unsynced["replicas"]]}
    for name, run in (("synced", synced), ("unsynced", unsynced)):
        result[name] = {
            "all": relative_difference(single, run, lambda p: True)[0],
            "trainable": relative_difference(single, run, lambda p: not is_stat(p))[0],
            "moving_stats": relative_difference(single, run, is_stat)[0],
            "loss": run["loss"],
            "all_synchronized": run["all_synchronized"],
            "any_synchronized": run["any_synchronized"],
        }
    result["single"] = {
        "loss": single["loss"],
        "any_synchronized": single["any_synchronized"],
        "num_batchnorm": single["num_batchnorm"],
        "update_norm": relative_difference(single, single, lambda p: True)[1],
        "num_tracked": len(single["updates"]),
        "num_moving_stats": sum(is_stat(p) for p in single["updates"]),
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], *(int(arg) for arg in sys.argv[2:3]))
