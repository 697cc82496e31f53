"""Where the milliseconds of one TensorFlow training step go, by op type (CPU).

    python benchmarks/step_profile.py [--variant=okddip_branch_4|single] [--steps=4]
        [--onednn=0|1] [--layers=fused|keras] [--out=NAME.json]

Builds the variant exactly as benchmarks/torch_vs_tf_cpu.py does (batch 128 of random 32x32x3
images, 100 classes, CoupledSGD), warms the compiled step up, then records `--steps` steps with
tf.profiler and sums each TensorFlow op's time on the host threads by op type (Conv2D, its two
backprops, BatchNorm's pieces, the optimizer's per-variable updates, ...). With 2 inter-op threads
ops overlap, so the per-type times add up to more than the wall time; they show the shares.
It also times the parts separately: forward + loss + gradients, the optimizer's apply alone, and
the whole step. --layers=keras profiles the net built from Keras' own BatchNormalization and padding layers
(okddip_tf before its speed work). Writes benchmarks/results/<out>.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--variant", default="okddip_branch_4", choices=["okddip_branch_4", "single"])
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--onednn", choices=["0", "1"], default=None,
                    help="TF_ENABLE_ONEDNN_OPTS for this process (default: as okddip_tf sets it).")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--layers", choices=["fused", "keras"], default="fused",
                    help="keras: Keras' own BatchNormalization and padding layers (the old net)")
parser.add_argument("--out", default=None)
ARGS = parser.parse_args()
if ARGS.onednn is not None:
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = ARGS.onednn
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_group_step  # noqa: E402  (imports okddip_tf, which sets the oneDNN default, first)
import tensorflow as tf  # noqa: E402


def timed(fn, steps):
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def op_times(logdir):
    """{op type: total microseconds} over the TF op events of the recorded host threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name:  # TF ops are "op_name:OpType"
                        continue
                    op_type = name.rsplit(":", 1)[1].strip()
                    if op_type in ("Process", "Run") or op_type.startswith("__inference"):
                        continue  # whole-function events that contain the ops
                    totals[op_type] += event.duration_ps / 1e6
    return totals


def main():
    tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(ARGS.threads)
    model, step, batch = tf_group_step.build(ARGS.variant, layers=ARGS.layers)
    grads_fn = tf.function(lambda: tf_group_step.gradients(model, batch))
    gradients = grads_fn()
    apply_fn = tf.function(lambda: model.optimizer.apply(gradients, model.trainable_variables))
    parts = {
        "step": timed(lambda: step(batch), ARGS.steps),
        "forward_loss_gradients": timed(lambda: [g.numpy() for g in grads_fn()][0], ARGS.steps),
        "optimizer_apply": timed(lambda: apply_fn(), ARGS.steps),
    }
    logdir = tempfile.mkdtemp(prefix="step_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(ARGS.steps):
        step(batch)
    wall = (time.perf_counter() - start) / ARGS.steps
    tf.profiler.experimental.stop()
    totals = op_times(logdir)
    total = sum(totals.values())
    by_type = {k: {"ms_per_step": v / 1e3 / ARGS.steps, "share": v / total}
               for k, v in totals.most_common()}
    for k, v in list(by_type.items())[:25]:
        print(f"{k:<40} {v['ms_per_step']:8.1f} ms  {100 * v['share']:5.1f}%")
    print({k: round(v * 1e3, 1) for k, v in parts.items()}, "ms; profiled wall",
          round(wall * 1e3, 1), "ms")
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    out = ARGS.out or f"step_profile_{ARGS.variant}_{ARGS.layers}_layers_onednn{onednn}.json"
    tf_group_step.write_json({
        "command": "python " + " ".join(sys.argv),
        "machine": tf_group_step.machine(),
        "threads": ARGS.threads,
        "variant": ARGS.variant,
        "layers": ARGS.layers,
        "batch_size": tf_group_step.BATCH,
        "profiled_steps": ARGS.steps,
        "load_average": os.getloadavg(),
        "note": ("Op times summed over the host threads (ops overlap with 2 threads, so the sum "
                 "exceeds the wall time); a shared machine, loaded by other processes."),
        "parts_ms": {k: v * 1e3 for k, v in parts.items()},
        "profiled_wall_ms_per_step": wall * 1e3,
        "op_types": by_type,
    }, out)


if __name__ == "__main__":
    main()
