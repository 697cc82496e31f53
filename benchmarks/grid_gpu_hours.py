"""The paper's whole grid in GPU-hours: every run of `okddip reproduce`'s manifest at the paper's
recipe (3 seeds; 300 CIFAR epochs, 90 ImageNet epochs), priced from measured epoch times.

    python benchmarks/grid_gpu_hours.py [--out=PATH]

What is measured and what is assumed:

* The only GPU epoch times at hand are the authors' PyTorch code's on an H200 (CIFAR-100,
  batch 128), as quoted in issue 24: 4.8 s for one ResNet-32, 11.7 s for the 4-student
  branch-based ResNet-32 group. No okddip_tf epoch has been timed alone on a GPU yet: the
  60-epoch Table 2 report (benchmarks/results/reproduce/) trained four cells sharing one H200.
* Every other run is priced relative to those two by the committed CPU measurement of every
  backbone's training step, one network and the branch-based group of 4
  (benchmarks/results/train_throughput_architectures.json, seconds per image). Its
  group-vs-one-network ratio (1.73 for ResNet-32) is not the H200's (11.7 / 4.8 = 2.44), so the
  estimate is given twice: scaled from the one-network figure and from the group figure.
* A branch-based group of m students costs the trunk plus m branches: one network plus
  (m - 1) / 3 of the group of 4's extra cost. A network-based group (DML, OKDDip network) costs
  m whole networks. A KD run adds its frozen teacher's forward pass, taken as a third of a
  training step (forward + backward ~ 3 forwards). An ImageNet epoch holds 1,281,167 images,
  a CIFAR one 50,000.

The runs, seeds and epochs are counted from okddip_tf/reproduce/manifest.py (runs that several
experiments share, e.g. Table 4's and Table 2's, are trained once, as in one workdir).
Nothing is timed here, so the JSON records its sources instead of a machine.
"""

import argparse
import datetime
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import budget as budgets, machine, manifest  # noqa: E402

# The authors' PyTorch code on an H200, CIFAR-100, batch 128 (issue 24): seconds per epoch.
AUTHORS_H200_EPOCH_SECONDS = {"single": 4.8, "okddip_branch_4": 11.7}
AUTHORS_SOURCE = ("the authors' PyTorch code on an H200, CIFAR-100 ResNet-32, batch 128, as "
                  "quoted in issue 24")
CPU_STEPS = os.path.join("benchmarks", "results", "train_throughput_architectures.json")
EPOCH_IMAGES = {"cifar": 50_000, "imagenet": 1_281_167}
TEACHER_FORWARD_SHARE = 1 / 3  # a frozen teacher's forward pass, against a training step


def image_costs(architectures):
    """{backbone: {"single", "okddip_branch_4"}: CPU seconds per training image}."""
    return {name: {kind: seconds / entry["batch_size"]
                   for kind, seconds in entry["train_step_seconds_median"].items()}
            for name, entry in architectures.items()}


def run_image_cost(run, costs):
    """CPU seconds per training image of one run (see the module's docstring)."""
    one, group4 = costs[run.backbone]["single"], costs[run.backbone]["okddip_branch_4"]
    if run.single:
        cost = one
    elif run.sharing == "network" or run.method == "dml":
        cost = run.num_students * one
    else:  # a shared trunk and one branch per student
        cost = one + (run.num_students - 1) * (group4 - one) / 3
    if run.teacher is not None:
        cost += TEACHER_FORWARD_SHARE * costs[run.teacher.backbone]["single"]
    return cost


def distinct_runs():
    """Every run of every experiment once (experiments sharing a workdir share runs)."""
    runs = []
    for experiment in manifest.EXPERIMENTS.values():
        runs += [run for run in experiment.runs() if run not in runs]
    return runs


def estimate(runs, costs, seeds=budgets.PAPER_SEEDS):
    """Per run and in total: epochs and H200 seconds, scaled from each of the authors' figures.

    H200 epoch of a run = the authors' epoch of `anchor` (one ResNet-32 or its group of 4) x
    the run's CPU cost of an epoch / the anchor's CPU cost of a CIFAR epoch.
    """
    anchors = {kind: costs["resnet32"][kind] * EPOCH_IMAGES["cifar"]
               for kind in AUTHORS_H200_EPOCH_SECONDS}
    rows = []
    for run in runs:
        epochs = budgets.SCHEDULES[run.schedule][0]
        cpu_epoch = run_image_cost(run, costs) * EPOCH_IMAGES[run.schedule]
        h200_epoch = {f"from_{kind}": seconds * cpu_epoch / anchors[kind]
                      for kind, seconds in AUTHORS_H200_EPOCH_SECONDS.items()}
        rows.append({"run": run.id, "schedule": run.schedule, "epochs": epochs,
                     "seeds": seeds, "h200_epoch_seconds": h200_epoch,
                     "gpu_hours": {key: seeds * epochs * value / 3600
                                   for key, value in h200_epoch.items()}})
    return rows


def totals(rows, schedule=None):
    kept = [row for row in rows if schedule is None or row["schedule"] == schedule]
    keys = kept[0]["gpu_hours"] if kept else {}
    return {"runs": len(kept), "trainings": sum(row["seeds"] for row in kept),
            "epochs": sum(row["seeds"] * row["epochs"] for row in kept),
            "gpu_hours": {key: sum(row["gpu_hours"][key] for row in kept) for key in keys}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results",
                                                      "grid_gpu_hours.json"))
    args = parser.parse_args()
    with open(os.path.join(REPO_ROOT, CPU_STEPS), encoding="utf-8") as f:
        measured = json.load(f)
    rows = estimate(distinct_runs(), image_costs(measured["results"]))
    cells = sum(len(experiment.cells) for experiment in manifest.EXPERIMENTS.values())
    report = {
        "measured_with": " ".join(["python benchmarks/grid_gpu_hours.py"] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": machine.git_commit(REPO_ROOT),
        "tree_changed": machine.git_tree_changed(REPO_ROOT),
        "sources": {
            "h200_epoch_seconds": AUTHORS_H200_EPOCH_SECONDS, "h200_source": AUTHORS_SOURCE,
            "relative_costs": CPU_STEPS,
            "relative_costs_machine": measured.get("machine"),
            "relative_costs_date": measured.get("date"),
        },
        "assumptions": {
            "branch_group_of_m": "one network + (m - 1) / 3 of the group of 4's extra cost",
            "network_group_of_m": "m networks (DML, OKDDip network)",
            "teacher_forward_share": TEACHER_FORWARD_SHARE,
            "epoch_images": EPOCH_IMAGES,
        },
        "experiments": list(manifest.EXPERIMENTS),
        "cells": cells,
        "cifar": totals(rows, "cifar"),
        "imagenet": totals(rows, "imagenet"),
        "all": totals(rows),
        "runs": rows,
    }
    atomic_files.write_json(args.out, report)
    for part in ("cifar", "imagenet", "all"):
        hours = report[part]["gpu_hours"]
        print(f"{part}: {report[part]['runs']} runs, {report[part]['epochs']:,} epochs, "
              f"{hours['from_single']:,.0f}-{hours['from_okddip_branch_4']:,.0f} H200-hours")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
