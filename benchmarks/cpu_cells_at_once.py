"""One training at a time or two at once on a CPU machine: which trains more images per second?

    python benchmarks/cpu_cells_at_once.py [--variant=okddip_branch_4] [--steps=20] [--name=NAME]

`okddip reproduce` trains its cells one after another; `--parallel=2` trains two at once. On a
GPU each gets its own device; on a CPU they share the cores. This measures, on this machine, the
training images per second summed over the processes running at once, for:
  one:                 one process, TensorFlow's default threads (every core)
  two:                 two processes at once, default threads each (oversubscribed)
  two_single_thread:   two processes at once, one intra-op and one inter-op thread and
                       OMP_NUM_THREADS=1 each
Each process builds the group (benchmarks/tf_group_step.py: batch 128, random CIFAR-sized
images, the paper's optimiser), warms up with 3 compiled training steps, waits for the others
(a shared start time), then times --steps steps. Writes
benchmarks/results/cpu_cells_at_once[_NAME].json with the machine, load and command; compare the
ratios of one run, not images/s across machines.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 3
MODES = {"one": (1, False), "two": (2, False), "two_single_thread": (2, True)}


def worker(args):
    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    import tensorflow as tf  # noqa: F401  pylint: disable=import-outside-toplevel

    if args.single_thread:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_group_step  # pylint: disable=import-outside-toplevel

    _, step, batch = tf_group_step.build(args.variant)
    for _ in range(WARMUP):
        step(batch)
    open(args.ready, "w").close()
    while not os.path.exists(args.ready + ".go"):  # every process starts timing together
        time.sleep(0.05)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    seconds = time.perf_counter() - start
    with open(args.out, "w") as file:
        json.dump({"seconds": seconds, "steps": args.steps,
                   "images_per_second": args.steps * tf_group_step.BATCH / seconds}, file)


def run_mode(mode, args, scratch):
    count, single_thread = MODES[mode]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if single_thread:
        env["OMP_NUM_THREADS"] = "1"
    os.makedirs(scratch, exist_ok=True)
    processes, outs, readies = [], [], []
    for index in range(count):
        out = os.path.join(scratch, f"{mode}_{index}.json")
        ready = os.path.join(scratch, f"{mode}_{index}.ready")
        command = [sys.executable, os.path.abspath(__file__), "--worker",
                   f"--variant={args.variant}", f"--steps={args.steps}", f"--out={out}",
                   f"--ready={ready}"]
        if single_thread:
            command.append("--single_thread")
        processes.append(subprocess.Popen(command, env=env, cwd=REPO_ROOT))
        outs.append(out)
        readies.append(ready)
    while not all(os.path.exists(r) for r in readies):
        if any(p.poll() not in (None, 0) for p in processes):
            raise SystemExit(f"a {mode} worker failed")
        time.sleep(0.1)
    for ready in readies:  # each worker waits for its "<ready>.go"
        open(ready + ".go", "w").close()
    for process in processes:
        if process.wait():
            raise SystemExit(f"a {mode} worker exited with {process.returncode}")
    runs = []
    for out in outs:
        with open(out) as file:
            runs.append(json.load(file))
    return {"processes": count, "single_thread": single_thread, "runs": runs,
            "images_per_second_total": sum(r["images_per_second"] for r in runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="okddip_branch_4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--name", default="")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--single_thread", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    sys.path.insert(0, REPO_ROOT)
    import tf_group_step  # pylint: disable=import-outside-toplevel

    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            found = {}
            for mode in MODES:
                found[mode] = run_mode(mode, args, os.path.join(scratch, str(round_index)))
                print(f"round {round_index} {mode}: "
                      f"{found[mode]['images_per_second_total']:.1f} images/s", flush=True)
            rounds.append(found)
    info = tf_group_step.machine()
    info["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    ratios = {mode: [r[mode]["images_per_second_total"] / r["one"]["images_per_second_total"]
                     for r in rounds] for mode in MODES if mode != "one"}
    tf_group_step.write_json({
        "command": ("python benchmarks/cpu_cells_at_once.py " + " ".join(sys.argv[1:])).strip(),
        "machine": info, "variant": args.variant, "steps": args.steps, "warmup_steps": WARMUP,
        "ratio_to_one": ratios, "rounds": rounds,
    }, "cpu_cells_at_once" + (f"_{tf_group_step.safe_name(args.name)}" if args.name else "")
        + ".json")
    return None


if __name__ == "__main__":
    main()
