"""Helper for test_multiworker.py: one training step of the tiny group, as a worker of a
MultiWorkerMirroredStrategy cluster (the cluster from $TF_CONFIG) or in one process.

    python tests/_multiworker_step.py OUT_DIR INIT_WEIGHTS STRATEGY [SEED]

STRATEGY is `multi_worker_mirrored` or `default`. Every process loads the same initial weights
(INIT_WEIGHTS, a `.weights.h5` of `build_group()`), makes the same global batch of GLOBAL_BATCH
images from SEED and runs one step of `GroupModel.fit` on it, the way `okddip train` feeds a
cluster: each worker keeps its half of the batch (`distribution.shard_by_example`), the loss is
divided by the replicas and BatchNorm is synchronised. Writes, like tests/_multiworker_worker.py,
OUT_DIR/weights.npz (`group.weights` before and after the step, BatchNorm moving statistics
included) and OUT_DIR/result.json. `run_step` is also called in-process by the test, for the
one-process reference.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from okddip_tf import CoupledSGD, GroupModel, distribution  # noqa: E402

GLOBAL_BATCH = 32
NUM_CLASSES = 10
NUM_STUDENTS = 3
IMAGE_SHAPE = (16, 16, 3)


def build_group():
    return GroupModel(backbone="tiny", num_classes=NUM_CLASSES, num_students=NUM_STUDENTS,
                      image_shape=IMAGE_SHAPE)


def make_batch(seed):
    """Images whose per-image brightness varies, so that the two halves' BatchNorm statistics
    differ (an unsynchronised BatchNorm then shows)."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-90.0, 90.0, size=(GLOBAL_BATCH, 1, 1, 1))
    noise = rng.normal(0.0, 40.0, size=(GLOBAL_BATCH, *IMAGE_SHAPE))
    images = np.clip(128.0 + offsets + noise, 0, 255).astype("uint8")
    return images, rng.integers(0, NUM_CLASSES, size=(GLOBAL_BATCH,)).astype("int32")


def run_step(out_dir, init_path, strategy_name, seed=0):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    out_dir = pathlib.Path(out_dir)
    strategy = distribution.make_strategy(strategy_name)
    images, labels = make_batch(int(seed))
    with strategy.scope():
        group = build_group()
        group.load_weights(init_path)
        group.distill_weight.assign(1.0)
        # Plain SGD: the update is -lr x the gradient (no momentum buffers to trace).
        group.compile(optimizer=CoupledSGD(learning_rate=0.1, momentum=0.0, nesterov=False,
                                           l2=0.0))
        group.optimizer.build(group.trainable_variables)
    distribution.enable_multi_worker_fit(group, strategy)
    dataset = distribution.shard_by_example(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH,
                                                                   drop_remainder=True))
    initial = [np.asarray(v.numpy()) for v in group.weights]
    history = group.fit(dataset, epochs=1, verbose=0, shuffle=False)
    final = [np.asarray(v.numpy()) for v in group.weights]
    np.savez(out_dir / "weights.npz",
             **{f"initial_{i:04d}": w for i, w in enumerate(initial)},
             **{f"final_{i:04d}": w for i, w in enumerate(final)})
    batchnorm = [layer for model in [*group.trunks, *group.heads] for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "chief": distribution.is_chief(strategy),
        "synchronized_bn": [layer.synchronized for layer in batchnorm],
        "paths": [v.path for v in group.weights],
        "history": history.history,
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    keras.config.disable_traceback_filtering()  # full tracebacks in the logs the test shows
    done = run_step(*sys.argv[1:])
    print("done", json.dumps({k: done[k] for k in ("replicas", "chief")}))
