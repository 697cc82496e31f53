"""Helper for test_multiworker.py: one process of a two-worker run, or the single-process reference.

    python tests/_multiworker_worker.py OUT_DIR WORKDIR TFDS_DATA_DIR STRATEGY [STEPS]

With STRATEGY=multi_worker_mirrored the cluster comes from $TF_CONFIG (set by the test, loopback
ports). Runs `train_and_evaluate` on the tiny group for one short epoch of real CIFAR-100
(STEPS global batches of GLOBAL_BATCH, deterministic pipeline) and writes, into OUT_DIR,
weights.npz (the group's weights after building and after training, in `group.weights` order:
BatchNorm moving statistics included) and result.json.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from okddip_tf import config as base  # noqa: E402
from okddip_tf import builders, distribution, train  # noqa: E402

keras.config.disable_traceback_filtering()  # full tracebacks in the logs the test shows

GLOBAL_BATCH = 32
STEPS = 4


def make_config(data_dir, strategy, steps=STEPS):
    config = base.apply_smoke(base.get_base_config())
    config.data.data_dir = data_dir
    config.data.train_examples = GLOBAL_BATCH * steps
    config.data.eval_examples = 64
    config.data.batch_size = GLOBAL_BATCH
    config.data.eval_batch_size = 32
    config.train.epochs = 1
    config.train.probe_images = 32
    config.train.verbose = 0
    config.train.deterministic = True
    # At the paper's 0.1 the tiny group's first steps amplify rounding: two single-process runs
    # that differ only in oneDNN kernels already end 1.3% apart after 4 steps. At 0.02 the
    # comparison sees the distribution math (loss scaling, BatchNorm sync, data split) instead.
    config.optim.learning_rate = 0.02
    config.train.strategy = strategy
    return config


def main(out_dir, workdir, data_dir, strategy_name, steps=STEPS):
    out_dir = pathlib.Path(out_dir)
    initial = {}
    build = builders.build_compiled_group

    def build_and_record(config, info, strategy, steps_per_epoch, method):
        group = build(config, info, strategy, steps_per_epoch, method)
        initial["weights"] = [np.asarray(v.numpy()) for v in group.weights]
        initial["replicas"] = strategy.num_replicas_in_sync
        initial["chief"] = distribution.is_chief(strategy)
        initial["synchronized_bn"] = [
            layer.synchronized for model in [*group.trunks, *group.heads]
            for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        return group

    builders.build_compiled_group = build_and_record
    group, history, metrics = train.train_and_evaluate(
        make_config(data_dir, strategy_name, int(steps)), workdir)
    final = [np.asarray(v.numpy()) for v in group.weights]
    np.savez(out_dir / "weights.npz",
             **{f"initial_{i:04d}": w for i, w in enumerate(initial["weights"])},
             **{f"final_{i:04d}": w for i, w in enumerate(final)})
    result = {
        "replicas": initial["replicas"],
        "chief": initial["chief"],
        "synchronized_bn": initial["synchronized_bn"],
        "paths": [v.path for v in group.weights],
        "history": history,
        "metrics": metrics,
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    print("done", json.dumps({k: result[k] for k in ("replicas", "chief")}))


if __name__ == "__main__":
    main(*sys.argv[1:])
