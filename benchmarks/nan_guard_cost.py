"""What NaNGuard costs a training step: none, the guard alone, the guard keeping the last good weights.

    python benchmarks/nan_guard_cost.py [--steps=10] [--rounds=5] [--name=NAME]
    KERAS_BACKEND=jax python benchmarks/nan_guard_cost.py ...   # on a GPU, with JAX

`GroupModel.fit` adds `NaNGuard(keep_last_good=True)` unless the callbacks hold a NaNGuard: it
reads every step's loss back to the host and copies every weight to host memory before every
step (`get_weights()`), so that a non-finite loss can put the last good weights back. This times
`fit` of the 4-student branch-based OKDDip ResNet-32 group (batch 128, random CIFAR-sized images,
the paper's optimiser) with three callback lists, interleaved round by round in one process:
  none:   no guard (a plain Keras fit: no per-step read-back)
  guard:  [NaNGuard()]: the loss read back every step
  keep:   [NaNGuard(keep_last_good=True)]: the read-back and the weight copy (fit's default)
Each round fits one epoch of --steps steps per variant; the first round (compilation, warm-up) is
not counted. Reported: the median seconds per step of each variant and its ratio to `none` within
each round, and the bytes the copy moves per step. Writes
benchmarks/results/nan_guard_cost_<backend>[_NAME].json with the machine, load and command.
"""

import argparse
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import okddip_tf  # noqa: E402  (first: the oneDNN default)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from okddip_tf import atomic_files  # noqa: E402
from okddip_tf.reproduce import machine  # noqa: E402

BATCH, CLASSES = 128, 100
VARIANTS = ("none", "guard", "keep")


def callbacks(variant):
    return {"none": [_NoGuard()], "guard": [okddip_tf.NaNGuard()],
            "keep": [okddip_tf.NaNGuard(keep_last_good=True)]}[variant]


class _NoGuard(okddip_tf.NaNGuard):
    """A NaNGuard that checks nothing (`fit` adds its own guard unless the list holds one).

    Its hooks are Keras' own no-ops, so that Keras sees no per-batch callback, as in a plain
    fit: with none, Keras dispatches the batch-end callbacks asynchronously where the backend
    allows it, and nothing waits for each step's loss.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_epoch_end = keras.callbacks.Callback.on_epoch_end


def build(steps, seed=0):
    keras.utils.set_random_seed(seed)
    group = okddip_tf.GroupModel(backbone="resnet32", num_classes=CLASSES,
                                 image_shape=(32, 32, 3), method="okddip", num_students=4,
                                 sharing="branch")
    group.compile(optimizer=okddip_tf.CoupledSGD(0.1, momentum=0.9, nesterov=True, l2=5e-4))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (steps * BATCH, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, CLASSES, steps * BATCH).astype(np.int32)
    return group, x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="")
    args = parser.parse_args()
    load_before = os.getloadavg()
    group, x, y = build(args.steps)
    copied = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in group.weights)
    seconds = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds + 1):
        for variant in VARIANTS:
            start = time.perf_counter()
            history = group.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                                callbacks=callbacks(variant))
            float(history.history["loss"][-1])  # the epoch's last step has finished
            if round_index:  # round 0 compiles and warms up
                seconds[variant].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_index}: " + ", ".join(
            f"{v} {seconds[v][-1] * 1000:.0f} ms/step" for v in VARIANTS if seconds[v]),
            flush=True)
    ratios = {variant: [s / n for s, n in zip(seconds[variant], seconds["none"])]
              for variant in VARIANTS if variant != "none"}
    info = machine.describe()
    info["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    backend = keras.backend.backend()
    report = {
        "command": ("python benchmarks/nan_guard_cost.py " + " ".join(sys.argv[1:])).strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "git_commit": machine.git_commit(REPO_ROOT),
        "machine": info,
        "backend": backend,
        "model": "OKDDip, branch-based ResNet-32, 4 students, batch 128",
        "steps_per_round": args.steps, "rounds_counted": args.rounds,
        "bytes_copied_per_step_keep": copied,
        "median_seconds_per_step": {v: statistics.median(seconds[v]) for v in VARIANTS},
        "median_ratio_to_none": {v: statistics.median(r) for v, r in ratios.items()},
        "seconds_per_step": seconds,
    }
    name = f"nan_guard_cost_{backend}" + (f"_{args.name}" if args.name else "") + ".json"
    out = os.path.join(REPO_ROOT, "benchmarks", "results", name)
    atomic_files.write_json(out, report)
    print(f"wrote {os.path.relpath(out, REPO_ROOT)}: median ratio to none "
          + ", ".join(f"{v} {r:.3f}" for v, r in report["median_ratio_to_none"].items()))


if __name__ == "__main__":
    main()
