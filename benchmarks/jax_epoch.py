"""Seconds per CIFAR-100 training epoch on the JAX backend: the 4-student group and one ResNet-32.

    KERAS_BACKEND=jax python benchmarks/jax_epoch.py --npz=cifar100_jpeg.npz \
        [--models=group,single] [--steps=N] [--timed_epochs=2] [--precision=float32] \
        [--profile_steps=N]

Each model trains with `okddip train`'s input path (okddip_tf.data.npz + .jax_batches: the
images on the device, pad-4 crop and flip in a jitted pre-step, epoch order from (seed, epoch)),
batch 128, the paper's optimiser, ramp-up and NaN guard (as in `okddip train`; the guard reads
each step's loss back to the host), for 1 + `--timed_epochs` epochs of `--steps` steps
(default: a full epoch, 50,000 // 128 = 390). The first epoch (compilation, warm-up) is excluded.
Also timed: the input pre-step alone over one epoch's batches, and one pass of `evaluate` over
the test split (as many images as the epoch trains, at most 10,000).
  group:  OKDDip, branch-based ResNet-32, 4 students (3 peers + leader)
  single: one ResNet-32 (the baseline method)
With `--profile_steps`, that many group steps are traced with jax.profiler and the device time is
split by XLA operation kind (convolution, fusion = elementwise/BatchNorm/reductions, other).

The .npz holds raw arrays (`x_train`, `y_train`, `x_test`, `y_test`) or the compact JPEG layout
(see okddip_tf/data/npz.py). TensorFlow is not needed. Writes
benchmarks/results/jax_epoch_<label>.json, label "cpu" on a CPU, "<device kind>_gpu" on a GPU.
"""

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time



def wants_profile(argv):
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--profile_steps", type=int, default=0)
    return early.parse_known_args(argv)[0].profile_steps > 0


os.environ.setdefault("KERAS_BACKEND", "jax")
PROFILE_DUMP = tempfile.mkdtemp(prefix="jax_epoch_hlo_") if wants_profile(sys.argv[1:]) else None
if PROFILE_DUMP:  # the optimised HLO names each traced operation's kind; set before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={PROFILE_DUMP} --xla_dump_hlo_as_text").strip()

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import okddip_tf  # noqa: E402
from okddip_tf.data import jax_batches, npz  # noqa: E402

TRAIN_SIZE = 50_000
MODELS = {
    "group": dict(method="okddip", num_students=4, sharing="branch"),
    "single": dict(method="baseline", num_students=1),
}
DESCRIPTIONS = {"group": "OKDDip, branch-based ResNet-32, 4 students (3 peers + leader)",
                "single": "one ResNet-32 (baseline)"}


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float((logs or {}).get("loss", 0.0))  # waits for the epoch's last step
        self.seconds.append(time.perf_counter() - self.start)


def device_label(device):
    if device.platform == "cpu":
        return "cpu"
    kind = re.sub(r"[^a-z0-9]+", "_", device.device_kind.lower()).strip("_")
    return f"{kind or device.platform}_gpu"


def build(model, info, steps_per_epoch, backbone):
    group = okddip_tf.GroupModel(backbone=backbone, num_classes=info.num_classes,
                                 image_shape=info.image_shape, pixel_mean=info.pixel_mean,
                                 pixel_std=info.pixel_std, **MODELS[model])
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=steps_per_epoch),
                  jit_compile=True)
    return group


def input_seconds(train, args, steps):
    """Seconds the input pre-step alone takes for one epoch's `steps` batches (after warm-up)."""
    batches = jax_batches.DeviceBatches(*train, batch_size=args.batch_size, augment=True,
                                        seed=1, epochs=2, initial_epoch=0)
    stream = iter(batches)
    jax.block_until_ready(next(stream))
    start = time.perf_counter()
    for _, batch in zip(range(steps), stream):
        jax.block_until_ready(batch)
    return time.perf_counter() - start


def time_model(model, train, evals, info, args, steps):
    full_steps = TRAIN_SIZE // args.batch_size
    group = build(model, info, full_steps, args.backbone)
    epochs = 1 + args.timed_epochs
    stream = iter(jax_batches.DeviceBatches(*train, batch_size=args.batch_size, augment=True,
                                            seed=0, epochs=epochs, initial_epoch=0))
    timer = EpochTimer()
    # okddip train's per-step callbacks: NaNGuard reads every step's loss back to the host.
    callbacks = [timer, okddip_tf.NaNGuard()] + ([okddip_tf.DistillWeightRampup(length=80)]
                                                 if group.distill_weight is not None else [])
    history = group.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=2,
                        callbacks=callbacks, shuffle=False)  # the stream shuffles per epoch
    eval_batches = jax_batches.EvalBatches(*evals, args.batch_size)
    group.evaluate(eval_batches, verbose=0)  # compiles
    start = time.perf_counter()
    group.evaluate(eval_batches, verbose=0)
    eval_seconds = time.perf_counter() - start
    timed = statistics.median(timer.seconds[1:])
    per_second = steps * args.batch_size / timed
    result = {
        "model": DESCRIPTIONS[model] if args.backbone == "resnet32" else f"{model}, {args.backbone}",
        "warmup_epoch_seconds": timer.seconds[0],
        "timed_epoch_seconds": timer.seconds[1:],
        "train_images_per_second": per_second,
        "seconds_per_full_epoch": full_steps * args.batch_size / per_second,
        "input_prestep_seconds_per_full_epoch": input_seconds(train, args, steps) * full_steps
                                                / steps,
        "eval_images": len(evals[1]),
        "eval_images_per_second": len(evals[1]) / eval_seconds,
        "final_loss": float(history.history["loss"][-1]),
    }
    if args.profile_steps and model == "group":
        result["profile"] = profile(group, train, args)
    return result


INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(")
COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
CONVOLUTION_TARGETS = ("cudnn$conv", "__cudnn$conv")  # convolutions as GPU custom calls


def hlo_kinds(dump_dir):
    """{instruction name: kind} over the optimised HLO modules XLA dumped.

    Kinds: "convolution" (a convolution, or a fusion or custom call computing one: XLA wraps
    them so), "fusion" (fused elementwise ops, BatchNorm, reductions) and "other".
    """
    kinds = {}
    paths = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
    # Names repeat across modules: the training step's own meaning wins.
    for path in sorted(paths, key=lambda path: "train_step" not in path):
        with open(path) as f:
            lines = f.read().splitlines()
        has_convolution, current, instructions = set(), None, []
        for line in lines:
            match = COMPUTATION.match(line)
            if match and "=" not in line.split("{")[0]:
                current = match.group(1)
                continue
            match = INSTRUCTION.match(line)
            if match:
                opcode = match.group(2)
                if opcode == "convolution" or any(t in line for t in CONVOLUTION_TARGETS):
                    has_convolution.add(current)
                instructions.append((match.group(1), opcode, CALLS.search(line)))
        for name, opcode, calls in instructions:
            if opcode == "convolution" or name in has_convolution or (
                    calls and calls.group(1) in has_convolution):
                kind = "convolution"
            else:
                kind = "fusion" if opcode == "fusion" else "other"
            kinds.setdefault(name, kind)
    return kinds


def profile(group, train, args):
    """Device time of `--profile_steps` group steps by operation kind, from a jax.profiler trace."""
    stream = iter(jax_batches.DeviceBatches(*train, batch_size=args.batch_size, augment=True,
                                            seed=2, epochs=1, initial_epoch=0))
    trace_dir = tempfile.mkdtemp(prefix="jax_epoch_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        group.fit(stream, steps_per_epoch=args.profile_steps, epochs=1, verbose=0, shuffle=False)
        wall = time.perf_counter() - start
    kinds = hlo_kinds(PROFILE_DUMP)
    trace_path = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"),
                           recursive=True)[0]
    with gzip.open(trace_path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals, convolution_ops = collections.Counter(), collections.Counter()
    for event in events:
        # CPU events are named by their HLO instruction; GPU kernels name it in args.hlo_op.
        name = (event.get("args") or {}).get("hlo_op", event.get("name"))
        if event.get("ph") == "X" and name in kinds:
            totals[kinds[name]] += event.get("dur", 0) / 1e6
            if kinds[name] == "convolution":
                convolution_ops[name] += 1
    device_seconds = sum(totals.values())
    shutil.rmtree(trace_dir, ignore_errors=True)
    return {
        "steps": args.profile_steps,
        "device_seconds_per_step": device_seconds / args.profile_steps,
        "wall_seconds_per_step_traced": wall / args.profile_steps,
        "share_by_kind": {kind: seconds / device_seconds for kind, seconds in totals.items()},
        "convolution_ops_per_step": sum(convolution_ops.values()) / args.profile_steps,
        "method": ("jax.profiler trace; each XLA op's kind read from the optimised HLO dump "
                   "(convolution: an op computing a convolution, fused or not)"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", required=True, help="CIFAR-100 .npz (raw arrays or JPEG).")
    parser.add_argument("--models", default="group,single", help="comma list: group,single")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (default: a full epoch, 50,000 // batch_size)")
    parser.add_argument("--timed_epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--precision", default="float32",
                        help="Keras dtype policy: float32 or mixed_bfloat16")
    parser.add_argument("--backbone", default="resnet32", help="resnet32 (tests use tiny)")
    parser.add_argument("--profile_steps", type=int, default=0)
    parser.add_argument("--label", default=None, help="results file suffix (default: device)")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results)")
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. machine load")
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        sys.exit(f"KERAS_BACKEND must be jax, got {keras.backend.backend()}.")
    keras.mixed_precision.set_global_policy(args.precision)

    full_steps = TRAIN_SIZE // args.batch_size
    steps = args.steps or full_steps
    start = time.perf_counter()
    with np.load(args.npz) as data:
        available = len(data["y_train"])
    train, evals, info = npz.load_arrays(
        name="cifar100", path=args.npz, train_split="train", eval_split="test",
        train_examples=min(available, steps * args.batch_size),
        eval_examples=min(10_000, steps * args.batch_size))
    decode_seconds = time.perf_counter() - start

    results = {model: time_model(model, train, evals, info, args, steps)
               for model in args.models.split(",")}
    device = jax.devices()[0]
    label = args.label or device_label(device)
    report = {
        "command": " ".join(
            ["KERAS_BACKEND=jax python benchmarks/jax_epoch.py",
             f"--npz={os.path.basename(args.npz)}"]
            + [f"--{k}={v}" for k, v in vars(args).items()
               if k not in ("npz", "out") and v not in (None, "")]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "note": " ".join(filter(None, [
            "full epochs" if steps >= full_steps else
            f"{steps} steps per epoch only: seconds_per_full_epoch is extrapolated",
            args.note])),
        "machine": {"device": device.device_kind, "platform": device.platform,
                    "device_count": jax.device_count(),
                    "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                    "jax": jax.__version__, "keras": keras.__version__,
                    "tensorflow_imported": "tensorflow" in sys.modules},
        "batch_size": args.batch_size,
        "steps_per_epoch": steps,
        "precision": args.precision,
        "decode_seconds": decode_seconds,
        "train_images": len(train[1]),
        "models": results,
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"jax_epoch_{label}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    print("wrote", out)
    if PROFILE_DUMP:
        shutil.rmtree(PROFILE_DUMP, ignore_errors=True)


if __name__ == "__main__":
    main()
