"""How far one training step moves from its reference: the numbers behind the tests' tolerances.

    python benchmarks/step_parity.py [--parts=jax,mirrored,precision] [--seeds=0,1,2]
        [--repeats=1] [--name=NAME]

Each part measures what a test asserts, with the test's own code, for several seeds (seed 0 is
the test's own case) and, with --repeats, the same seed again (thread scheduling may change the
rounding):
- jax: one JAX training step against the TensorFlow step from the same weights and batch
  (tests/test_jax_backend.py::test_one_jax_step_equals_the_tf_step, its prepare_step, tf_step
  and WORKER): |update_jax - update_tf| / |update_tf|, for the tiny group and ResNet-20.
- mirrored: one step on 2 logical CPUs under MirroredStrategy against one device
  (tests/_mirrored_step.py, run by tests/test_group.py), with synchronised BatchNorm and without:
  relative L2 differences of all tracked weights, the trainable ones and the moving statistics.
- precision: one step under mixed_float16 and mixed_bfloat16 against float32 from the same
  weights (tests/test_precision.py's one_step_update): cosine and norm ratio of the trainable
  update. Seed s uses the tiny group of seed s and test_precision's batch of seed s; `group4`
  is test_group.py's mixed_float16 case (group seed 4, its 16 images of seed 2).
- multiworker: two MultiWorkerMirroredStrategy workers on 127.0.0.1 against one process, 4 steps
  of the tiny group on real CIFAR-100 (tests/test_multiworker.py's processes and differences;
  needs TFDS_DATA_DIR). Its run has no seed to vary: it is measured once per --repeats.
- multiworker_step: one step of the tiny group on two MultiWorkerMirroredStrategy workers on
  127.0.0.1 against one process, on a synthetic batch of seed s (tests/test_multiworker.py's
  one_step_runs, which the default suite's two-worker test runs for seed 0).
Writes benchmarks/results/step_parity[_NAME].json with the machine, versions, command, date and
git commit. No timing is taken: these are differences of numbers.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

import tf_group_step  # noqa: E402  (imports okddip_tf, then TensorFlow)

import keras  # noqa: E402
import numpy as np  # noqa: E402

PARTS = ("jax", "mirrored", "precision", "multiworker", "multiworker_step")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each seed")
    parser.add_argument("--name", default="")
    return parser.parse_args()


def jax_part(seed, scratch):
    """test_jax_backend's comparison, for the test's seed (7) + `seed`."""
    import test_jax_backend as t  # pylint: disable=import-outside-toplevel

    line = 'result["fit"] = fit_checks()\n'
    assert line in t.WORKER, "test_jax_backend.WORKER changed: update step_parity.py"
    worker = t.WORKER.replace(line, "")  # the steps only, not the fit checks
    folders, prepared = {}, {}
    for name, backbone, num_students, side, batch in t.STEP_CASES:
        folders[name] = pathlib.Path(tempfile.mkdtemp(prefix=f"jax_{name}_", dir=scratch))
        prepared[name] = t.prepare_step(folders[name], backbone, num_students, side, batch,
                                        seed=7 + seed)
    spec = {"tiny": t.TINY, "steps": {
        name: {"dir": str(folders[name]), "group": t.group_options(backbone, num_students, side)}
        for name, backbone, num_students, side, _ in t.STEP_CASES}}
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env.setdefault("XLA_FLAGS", t.XLA_FAST_COMPILE)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-c", worker, json.dumps(spec)], env=env,
                               cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    tf_results = {name: t.tf_step(*prepared[name]) for name in prepared}
    output = process.communicate(timeout=t.TIMEOUT_S)[0]
    lines = [x for x in output.splitlines() if x.startswith("RESULT ")]
    assert process.returncode == 0 and lines, output[-4000:]
    got = json.loads(lines[-1][len("RESULT "):])["steps"]
    result = {}
    for name, expected in tf_results.items():
        with np.load(folders[name] / "jax_update.npz") as saved:
            jax_update = [saved[f"{i:04d}"] for i in range(len(expected["paths"]))]
        tf_flat = np.concatenate([u.ravel() for u in expected["update"]]).astype(np.float64)
        jax_flat = np.concatenate([u.ravel() for u in jax_update]).astype(np.float64)
        logs = expected["logs"]
        result[name] = {
            "update_norm": float(np.linalg.norm(tf_flat)),
            "relative_update_difference": float(np.linalg.norm(jax_flat - tf_flat)
                                                / np.linalg.norm(tf_flat)),
            "loss_relative_difference": abs(got[name]["logs"]["loss"] - logs["loss"])
            / abs(logs["loss"]),
            "largest_log_difference": max(abs(got[name]["logs"][k] - v) for k, v in logs.items()),
        }
        print("jax", seed, name, json.dumps(result[name]), flush=True)
    return result


def mirrored_part(seed, scratch):
    out_dir = tempfile.mkdtemp(prefix="mirrored_", dir=scratch)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "_mirrored_step.py"),
                          out_dir, str(seed)], env=env, cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    result = json.loads((pathlib.Path(out_dir) / "result.json").read_text())
    result.pop("seed", None)
    print("mirrored", seed, json.dumps({k: result[k] for k in ("synced", "unsynced")}), flush=True)
    return result


def precision_part(seed):
    import test_group  # pylint: disable=import-outside-toplevel
    import test_precision as t  # pylint: disable=import-outside-toplevel

    cases = {f"seed{seed}": (t.tiny_group(seed).get_weights(), *t.batch(seed=seed))}
    if seed == 0:  # test_group.py's mixed_float16 case
        cases["group4"] = (t.tiny_group(4).get_weights(), test_group.make_images(16, seed=2),
                           test_group.make_labels(16, seed=2))
    result = {}
    try:
        for case, (initial, images, labels) in cases.items():
            expected, expected_logs = t.one_step_update("float32", initial, images, labels)
            for precision in t.MIXED:
                actual, logs = t.one_step_update(precision, initial, images, labels)
                result[f"{precision}/{case}"] = {
                    "cosine": float(actual @ expected
                                    / (np.linalg.norm(actual) * np.linalg.norm(expected))),
                    "norm_ratio": float(np.linalg.norm(actual) / np.linalg.norm(expected)),
                    "loss_relative_difference": abs(logs["loss"] - expected_logs["loss"])
                    / abs(expected_logs["loss"]),
                }
                print("precision", precision, case, json.dumps(result[f"{precision}/{case}"]),
                      flush=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return result


def multiworker_part(scratch):
    import test_multiworker as t  # pylint: disable=import-outside-toplevel

    data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    root = pathlib.Path(tempfile.mkdtemp(prefix="multiworker_", dir=scratch))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in t.free_loopback_ports(2)]}
    started = []
    try:
        for index in range(2):
            started.append(t.start(f"worker{index}", root, root / "workdir", data_dir,
                                   "multi_worker_mirrored",
                                   {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        started.append(t.start("single", root, root / "single_workdir", data_dir, "default"))
        t.wait_all(started, 1200)
    finally:
        t.stop(started)
    runs = {run["name"]: t.load(run) for run in started}
    worker, single = runs["worker0"], runs["single"]
    result = {
        "workers_bit_identical": all(np.array_equal(a, b) for a, b in
                                     zip(worker["final"], runs["worker1"]["final"])),
        "all": t.relative_update_difference(worker, single, lambda p: True),
        "trainable_and_other": t.relative_update_difference(worker, single,
                                                            lambda p: not t.is_stat(p)),
        "moving_stats": t.relative_update_difference(worker, single, t.is_stat),
        "history_relative_difference": {
            key: abs(worker["history"][key][-1] - single["history"][key][-1])
            / abs(single["history"][key][-1]) for key in ("loss", "val_loss")},
    }
    print("multiworker", json.dumps(result), flush=True)
    return result


def multiworker_step_part(seed, scratch):
    import test_multiworker as t  # pylint: disable=import-outside-toplevel

    runs = t.one_step_runs(pathlib.Path(tempfile.mkdtemp(prefix="mw_step_", dir=scratch)), seed)
    worker, single = runs["worker0"], runs["single"]
    result = {
        "workers_bit_identical": all(np.array_equal(a, b) for a, b in
                                     zip(worker["final"], runs["worker1"]["final"])),
        **t.update_differences(worker, single),
        "loss_relative_difference": abs(worker["history"]["loss"][-1]
                                        - single["history"]["loss"][-1])
        / abs(single["history"]["loss"][-1]),
    }
    print("multiworker_step", seed, json.dumps(result), flush=True)
    return result


def summary(runs):
    """Per part and quantity, the smallest and largest value over every seed and repeat."""
    ranges = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}" if prefix else key, inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = ranges.get(prefix, (value, value))
            ranges[prefix] = (min(low, value), max(high, value))

    for run in runs:
        walk(run["part"], {k: v for k, v in run.items() if k not in ("part", "seed", "repeat")})
    return {key: {"min": low, "max": high} for key, (low, high) in sorted(ranges.items())}


def main():
    args = parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {PARTS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for seed in seeds:
                for part in parts:
                    if part == "multiworker" and seed != seeds[0]:
                        continue  # no seed to vary: once per repeat
                    if part == "jax":
                        measured = jax_part(seed, scratch)
                    elif part == "multiworker":
                        measured = multiworker_part(scratch)
                    elif part == "multiworker_step":
                        measured = multiworker_step_part(seed, scratch)
                    elif part == "mirrored":
                        measured = mirrored_part(seed, scratch)
                    else:
                        measured = precision_part(seed)
                    runs.append({"part": part, "seed": seed, "repeat": repeat, **measured})
    machine = tf_group_step.machine()
    machine["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    try:
        import jax  # pylint: disable=import-outside-toplevel

        machine["jax"] = jax.__version__
    except ImportError:
        machine["jax"] = None
    command = "python benchmarks/step_parity.py " + " ".join(sys.argv[1:])
    tf_group_step.write_json({
        "command": command.strip(), "machine": machine,
        "note": "Seed 0 is each test's own case; the tests assert bounds on it. Differences are "
                "relative L2 norms of the weight updates (new - initial weights).",
        "seeds": seeds, "repeats": args.repeats, "summary": summary(runs), "runs": runs,
    }, "step_parity" + (f"_{tf_group_step.safe_name(args.name)}" if args.name else "") + ".json")


if __name__ == "__main__":
    main()
