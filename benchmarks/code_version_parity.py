"""Do two okddip_tf commits train alike? The check behind comparing seeds trained at either.

    python benchmarks/code_version_parity.py --workdir=DIR [--old_commit=23f2d23]
        [--cells=cifar100_resnet32_baseline,...] [--seed=1] [--steps=3] [--name=NAME]

Table 2's seeds trained over days in which the package was redesigned: Baseline's and OKDDip
(branch)'s seeds 1 and 2 at 23f2d23, later seeds after the house redesign and after PyTorch-mode
BatchNorm began updating its moving variance with the unbiased batch variance. This script
measures, for each cell, how far the two commits' training differs:

- data: each commit's own tf.data pipeline, same config and seed, draws its first training
  batches of the first and of a resumed epoch, and the first evaluation batch; compared exactly.
- step: each commit builds the cell's group from the cell's config (its `config.json` in DIR,
  `okddip reproduce`'s workdir, applied over each commit's defaults), takes the same initial
  weights and the same batches, and runs --steps training steps (`train_on_batch`, distillation
  weight 1 as after the ramp-up). Compared: every step's logged losses and accuracies, and every
  weight after the steps, as relative L2 differences (|new - old| / |old|), the BatchNorm moving
  variances apart.
- moving variance: for each BatchNorm layer, the ratio of the two commits' moving-variance
  updates, (v_new - r v_0) / (v_old - r v_0) with r = momentum^steps and v_0 = 1 the initial
  value, beside n / (n - 1) for n the values per channel of a training batch (the unbiased
  correction): that ratio is 1 where the update is the same.

The old commit is checked out into a temporary git worktree of this repository, run with the
same Python. Writes benchmarks/results/code_version_parity[_NAME].json with the machine,
versions, command, date and both commits.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CELLS = ("cifar100_resnet32_baseline", "cifar100_resnet32_okddip_branch",
         "cifar100_resnet32_independent_branch", "cifar100_resnet32_one_branch",
         "cifar100_resnet32_cl_ilr_branch", "cifar100_resnet32_dml_network")
RESUMED_EPOCH = 8  # the first epoch after the first learning-rate drop at 15 epochs


# ----------------------------------------------------------------------------------------------
# The worker: runs inside one commit's tree (its okddip_tf first on sys.path).

def apply_saved(config, saved, prefix=""):
    """Sets every key of the saved config that this commit's config has; returns the others."""
    skipped = []
    for key, value in saved.items():
        if key not in config:
            skipped.append(prefix + key)
        elif isinstance(value, dict):
            skipped += apply_saved(config[key], value, f"{prefix}{key}.")
        else:
            config[key] = tuple(value) if isinstance(value, list) else value
    return skipped


def build_group(config, info, steps_per_epoch):
    """The compiled group, through whichever builder API this commit has."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    strategy = tf.distribute.get_strategy()
    try:
        from okddip_tf import builders  # pylint: disable=import-outside-toplevel
    except ImportError:  # before the house redesign: the builders lived in train.py
        from okddip_tf import train  # pylint: disable=import-outside-toplevel

        options = train.prepare_method(config, tempfile.mkdtemp())
        return train.build_compiled_group(config, info, strategy, steps_per_epoch, options)
    return builders.build_compiled_group(config, info, strategy, steps_per_epoch,
                                         builders.build_method(config))


def take_batches(config, initial_epoch, count):
    from okddip_tf.data import load_datasets  # pylint: disable=import-outside-toplevel

    options = dict(**config.data, seed=config.train.seed, epochs=config.train.epochs,
                   initial_epoch=initial_epoch)
    train_ds, eval_ds, info = load_datasets(**options)
    batches = [(x.numpy(), y.numpy()) for x, y in train_ds.take(count)]
    eval_x, eval_y = next(iter(eval_ds))
    return batches, (eval_x.numpy(), eval_y.numpy()), info


def batchnorm_input_shapes(group, images):
    """{BatchNormalization layer: the shape of its input} in a training-mode forward pass of
    `images` (which moves the moving statistics: call it last)."""
    import keras  # pylint: disable=import-outside-toplevel

    shapes = {}
    layers = [layer for layer in group._flatten_layers()  # pylint: disable=protected-access
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        def recording(inputs, *args, _layer=layer, _call=layer.call, **kwargs):
            shapes[_layer] = tuple(inputs.shape)
            return _call(inputs, *args, **kwargs)
        object.__setattr__(layer, "call", recording)
    try:
        group(images, training=True)
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")
    missing = [layer.name for layer in layers if layer not in shapes]
    if missing:
        raise SystemExit(f"BatchNormalization layers not reached by a forward pass: {missing}")
    return shapes


def worker(args):
    sys.path.insert(0, args.tree)
    import keras  # pylint: disable=import-outside-toplevel
    import okddip_tf  # pylint: disable=import-outside-toplevel
    from okddip_tf import config as config_module  # pylint: disable=import-outside-toplevel

    assert os.path.dirname(os.path.abspath(okddip_tf.__file__)) == os.path.join(
        os.path.abspath(args.tree), "okddip_tf"), okddip_tf.__file__
    with open(args.config) as file:
        saved = json.load(file)
    config = config_module.get_base_config()
    skipped = apply_saved(config, saved)
    keras.utils.set_random_seed(config.train.seed)
    first, eval_batch, info = take_batches(config, 0, args.steps)
    resumed, _, _ = take_batches(config, RESUMED_EPOCH, 1)
    out = {f"data_first_{i}_{part}": array for i, batch in enumerate(first)
           for part, array in zip("xy", batch)}
    out.update({"data_resumed_x": resumed[0][0], "data_resumed_y": resumed[0][1],
                "data_eval_x": eval_batch[0], "data_eval_y": eval_batch[1]})
    steps_per_epoch = info.num_train_examples // config.data.batch_size
    group = build_group(config, info, steps_per_epoch)
    if args.initial:  # the other commit's weights and batches
        given = np.load(args.initial)
        weights = [given[f"weight_{i}"] for i in range(int(given["count"]))]
        theirs = [w.shape for w in weights]
        ours = [tuple(v.shape) for v in group.weights]
        if theirs != ours:
            raise SystemExit(f"the two commits' groups differ in their weights' shapes: {ours} "
                             f"here, {theirs} there")
        group.set_weights(weights)
        batches = [(given[f"data_first_{i}_x"], given[f"data_first_{i}_y"])
                   for i in range(args.steps)]
    else:
        batches = first
        out.update({f"weight_{i}": w for i, w in enumerate(group.get_weights())})
        out["count"] = np.array(len(group.weights))
    if getattr(group, "distill_weight", None) is not None:
        group.distill_weight.assign(1.0)
    logs = [{key: float(value) for key, value in
             group.train_on_batch(x, y, return_dict=True).items()} for x, y in batches]
    out.update({f"after_{i}": w for i, w in enumerate(group.get_weights())})
    names = [v.path for v in group.weights]
    moving = {layer.moving_variance.path: {
        "momentum": float(layer.momentum),
        "unbiased": bool(getattr(layer, "unbiased_moving_variance", False)),
        "values_per_channel": int(np.prod(shape[:-1]))}
        for layer, shape in batchnorm_input_shapes(group, batches[0][0]).items()}
    np.savez(args.out, **out)
    with open(args.out + ".json", "w") as file:
        json.dump({"logs": logs, "names": names, "skipped_config_keys": skipped,
                   "batchnorm": moving, "version": okddip_tf.__version__}, file)


# ----------------------------------------------------------------------------------------------
# The driver: runs the worker at both commits and compares.

def run_worker(tree, config, out, steps, initial=None):
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"--tree={tree}",
               f"--config={config}", f"--out={out}", f"--steps={steps}"]
    if initial:
        command.append(f"--initial={initial}")
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
        raise SystemExit(f"the worker at {tree} failed:\n{result.stderr[-4000:]}")
    with open(out + ".json") as file:
        return np.load(out), json.load(file)


def relative(new, old):
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    scale = np.linalg.norm(old)
    return float(np.linalg.norm(new - old) / scale) if scale else float(np.linalg.norm(new))


def compare(cell, new, new_meta, old, old_meta, steps):
    data = {key: bool(np.array_equal(new[key], old[key]))
            for key in new.files if key.startswith("data_")}
    count = int(new["count"])
    names = new_meta["names"]
    moving_paths = set(new_meta["batchnorm"])
    weights, variances = {}, []
    for i in range(count):
        a, b = new[f"after_{i}"], old[f"after_{i}"]
        if names[i] in moving_paths:
            momentum = new_meta["batchnorm"][names[i]]["momentum"]
            n = new_meta["batchnorm"][names[i]]["values_per_channel"]
            start = new[f"weight_{i}"]
            decay = momentum ** steps
            ratio = (a.astype(np.float64) - decay * start) / (b.astype(np.float64) - decay * start)
            variances.append({"variable": names[i],
                              "unbiased_new": new_meta["batchnorm"][names[i]]["unbiased"],
                              "unbiased_old": old_meta["batchnorm"].get(
                                  old_meta["names"][i], {}).get("unbiased"),
                              "values_per_channel": n,
                              "unbiased_correction": n / (n - 1),
                              "update_ratio_median": float(np.median(ratio)),
                              "relative_difference": relative(a, b)})
        else:
            weights[names[i]] = relative(a, b)
    logs = []
    for mine, theirs in zip(new_meta["logs"], old_meta["logs"]):
        logs.append({key: {"new": mine[key], "old": theirs.get(key)}
                     for key in sorted(mine)})
    log_differences = [abs(v["new"] - v["old"]) for entry in logs for v in entry.values()
                       if v["old"] is not None]
    log_relative = [abs(v["new"] - v["old"]) / abs(v["old"]) for entry in logs
                    for v in entry.values() if v["old"]]
    mismatch = [abs(v["update_ratio_median"] /
                    (v["unbiased_correction"] if v["unbiased_new"] and not v["unbiased_old"]
                     else 1.0) - 1) for v in variances]
    return {
        "cell": cell,
        "summary": {
            "data_equal": all(data.values()),
            "max_log_difference": max(log_differences),
            "max_log_relative_difference": max(log_relative),
            "logs_only_new": sorted({k for e in logs for k, v in e.items() if v["old"] is None}),
            "max_weight_relative_difference": max(weights.values()),
            "moving_variance_layers": len(variances),
            "unbiased_now_biased_before": sum(v["unbiased_new"] and not v["unbiased_old"]
                                              for v in variances),
            "max_update_ratio_error": max(mismatch),
        },
        "data_equal": data,
        "config_keys_new_only": old_meta["skipped_config_keys"],
        "config_keys_old_only": new_meta["skipped_config_keys"],
        "logs": logs,
        "weights": {"count": len(weights), "max_relative_difference": max(weights.values()),
                    "largest": sorted(weights.items(), key=lambda kv: -kv[1])[:5]},
        "moving_variance": variances,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="okddip reproduce's workdir holding the cells")
    parser.add_argument("--old_commit", default="23f2d23")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--seed", type=int, default=1, help="the seed folder whose config.json "
                        "each cell uses")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--name", default="")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--initial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not args.workdir:
        parser.error("--workdir is required")
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    sys.path.insert(0, str(REPO_ROOT))
    import tf_group_step  # pylint: disable=import-outside-toplevel
    from okddip_tf.reproduce import machine  # pylint: disable=import-outside-toplevel

    load_before = os.getloadavg()
    old_commit = subprocess.run(["git", "rev-parse", "--short", args.old_commit], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    results, missing = [], []
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = os.path.join(scratch, "old")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", old_tree, old_commit],
                       cwd=REPO_ROOT, check=True)
        try:
            for cell in args.cells.split(","):
                config = os.path.join(args.workdir, cell, f"seed{args.seed}", "config.json")
                if not os.path.isfile(config):
                    missing.append(cell)
                    continue
                print(f"{cell}: new commit ...", flush=True)
                new, new_meta = run_worker(str(REPO_ROOT), config,
                                           os.path.join(scratch, f"{cell}_new.npz"), args.steps)
                print(f"{cell}: old commit {old_commit} ...", flush=True)
                old, old_meta = run_worker(old_tree, config,
                                           os.path.join(scratch, f"{cell}_old.npz"), args.steps,
                                           initial=os.path.join(scratch, f"{cell}_new.npz"))
                results.append(compare(cell, new, new_meta, old, old_meta, args.steps))
                print(json.dumps(results[-1]["summary"]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old_tree], cwd=REPO_ROOT,
                           check=False)
    info = tf_group_step.machine()
    info["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    tf_group_step.write_json({
        "command": ("python benchmarks/code_version_parity.py " + " ".join(
            arg for arg in sys.argv[1:] if not arg.startswith("--workdir"))).strip(),
        "machine": info,
        "old_commit": old_commit,
        "new_commit": machine.git_commit(str(REPO_ROOT)),
        "steps": args.steps, "seed_config": args.seed, "resumed_epoch": RESUMED_EPOCH,
        "cells_without_a_config": missing,
        "cells": results,
    }, "code_version_parity" + (f"_{tf_group_step.safe_name(args.name)}" if args.name else "")
        + ".json")
    return None


if __name__ == "__main__":
    main()
