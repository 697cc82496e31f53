"""How much Table 2's errors move with the BatchNorm moving-variance change, on the kept seeds.

    python benchmarks/running_variance_effect.py --workdir=DIR [--cells=...] [--seeds=1,2]
        [--name=NAME]

PyTorch-mode BatchNorm updates its moving variance with the unbiased batch variance since
5f569cb (conv layers) and 51c2504 (ONE's gate); the training steps are otherwise the same
(benchmarks/code_version_parity.py: equal batches, equal losses and weights). The moving
statistics do not enter a training step, so a run of either commit has the same weights, and
its moving variance differs by the constant factor n / (n - 1), n the values per channel of a
training batch (the initial value's share, momentum^steps, is 0.9^5850 after 15 epochs). This
script evaluates each kept final checkpoint of DIR (`okddip reproduce`'s workdir) on the test
split twice, as saved and with every PyTorch-mode moving variance moved to the other commit's
(x n/(n-1) for a seed trained before the change, / n/(n-1) after), and reports the cell's
reported accuracy (the leader's or the students' mean) both ways.

Which commit a seed trained at is read from its sittings.json: a sitting with no recorded
commit ran before the runner recorded one (Table 2's workdir: at 23f2d23, before the change).
Writes benchmarks/results/running_variance_effect[_NAME].json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(REPO_ROOT))

CHANGE = "5f569cb"  # the first commit whose PyTorch-mode BatchNorm is unbiased
CELLS = ("cifar100_resnet32_baseline", "cifar100_resnet32_okddip_branch",
         "cifar100_resnet32_independent_branch", "cifar100_resnet32_one_branch",
         "cifar100_resnet32_cl_ilr_branch", "cifar100_resnet32_dml_network")


def trained_after_change(directory):
    """True / False where every sitting of the seed ran after / before CHANGE."""
    with open(os.path.join(directory, "sittings.json")) as file:
        sittings = json.load(file)
    after = set()
    for sitting in sittings:
        commit = sitting.get("code")
        after.add(commit is not None and subprocess.run(
            ["git", "merge-base", "--is-ancestor", CHANGE, commit], cwd=REPO_ROOT,
            check=False).returncode == 0)
    if len(after) != 1:
        raise SystemExit(f"{directory}: its sittings ran on both sides of {CHANGE}")
    return after.pop()


def evaluate(group, eval_ds, key):
    return float(group.evaluate(eval_ds, return_dict=True, verbose=0)[key])


def seed_effect(directory):
    import code_version_parity  # pylint: disable=import-outside-toplevel
    from okddip_tf.data import load_datasets  # pylint: disable=import-outside-toplevel
    from okddip_tf.deploy import export  # pylint: disable=import-outside-toplevel

    with open(os.path.join(directory, "config.json")) as file:
        data = json.load(file)["data"]
    with open(os.path.join(directory, "history.json")) as file:
        history = json.load(file)
    with open(os.path.join(directory, "dataset_info.json")) as file:
        image_shape = json.load(file)["image_shape"]
    _, eval_ds, _ = load_datasets(**data, seed=0, epochs=1)
    group = export.load_group(os.path.join(directory, "checkpoints", "last.keras"))
    group.compile(optimizer="sgd")
    key = group.method.reported
    images = np.zeros((data["batch_size"], *image_shape), np.uint8)  # a training batch's shape
    saved = group.get_weights()
    shapes = code_version_parity.batchnorm_input_shapes(group, images)
    group.set_weights(saved)  # the forward pass above moved the moving statistics
    after = trained_after_change(directory)
    as_saved = evaluate(group, eval_ds, key)
    scaled = 0
    for layer, shape in shapes.items():
        if getattr(layer, "unbiased_moving_variance", False):
            n = int(np.prod(shape[:-1]))
            factor = (n - 1) / n if after else n / (n - 1)
            layer.moving_variance.assign(layer.moving_variance.numpy() * factor)
            scaled += 1
    other = evaluate(group, eval_ds, key)
    return {"key": key, "trained_after_change": after, "layers_scaled": scaled,
            "recorded_error": 100 * (1 - history[f"val_{key}"][-1]),
            "error_as_saved": 100 * (1 - as_saved),
            "error_with_other_commits_variance": 100 * (1 - other),
            "difference_points": 100 * (as_saved - other)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--name", default="")
    args = parser.parse_args()
    import tf_group_step  # pylint: disable=import-outside-toplevel

    load_before = os.getloadavg()
    seeds, skipped = [], []
    for cell in args.cells.split(","):
        for seed in args.seeds.split(","):
            directory = os.path.join(args.workdir, cell, f"seed{seed}")
            if not os.path.isfile(os.path.join(directory, "metrics.json")):
                skipped.append(f"{cell}/seed{seed}")  # not finished
                continue
            print(f"{cell} seed {seed} ...", flush=True)
            seeds.append({"cell": cell, "seed": int(seed), **seed_effect(directory)})
            print(json.dumps(seeds[-1]), flush=True)
    machine = tf_group_step.machine()
    machine["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    differences = [abs(s["difference_points"]) for s in seeds]
    tf_group_step.write_json({
        "command": ("python benchmarks/running_variance_effect.py " + " ".join(
            arg for arg in sys.argv[1:] if not arg.startswith("--workdir"))).strip(),
        "machine": machine,
        "change": CHANGE,
        "note": "difference_points = error with the other commit's moving variance - error as "
                "saved, in points of test error; error_as_saved re-evaluates the checkpoint "
                "and must equal recorded_error, the run's own last-epoch evaluation.",
        "max_abs_difference_points": max(differences) if differences else None,
        "max_abs_recorded_vs_saved_points": max(
            (abs(s["recorded_error"] - s["error_as_saved"]) for s in seeds), default=None),
        "not_finished": skipped,
        "seeds": seeds,
    }, "running_variance_effect" + (f"_{tf_group_step.safe_name(args.name)}" if args.name
                                    else "") + ".json")


if __name__ == "__main__":
    main()
