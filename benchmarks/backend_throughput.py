"""Training throughput of the same models on Keras' TensorFlow and JAX backends, on this machine.

    python benchmarks/backend_throughput.py [--backbone=resnet32] [--batch_size=128] [--steps=8]

Runs itself once per backend, one after the other, in a subprocess with KERAS_BACKEND set (a
process has one backend). Each times `group.train_on_batch` on random uint8 images held in memory,
after 3 warm-up steps (which include tracing or jit compilation), for a single network and the
4-student branch-based OKDDip group. Writes benchmarks/results/backend_throughput_<backbone>.json.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from okddip_tf.reproduce import machine

BACKENDS = ("tensorflow", "jax")
VARIANTS = {
    "single": dict(method="baseline", num_students=1),
    "okddip_branch_4": dict(method="okddip", num_students=4, sharing="branch"),
}


def measure(args):
    """Times each variant on the backend of this process; returns {variant: result}."""
    import okddip_tf  # first: it sets the oneDNN default before TensorFlow loads

    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, args.batch_size).astype("int32")
    results = {}
    for name, variant in VARIANTS.items():
        group = okddip_tf.GroupModel(backbone=args.backbone, num_classes=100,
                                     image_shape=(32, 32, 3), **variant)
        group.compile(optimizer=okddip_tf.CoupledSGD(0.1))
        start = time.perf_counter()
        for _ in range(3):
            group.train_on_batch(images, labels)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            group.train_on_batch(images, labels)
        seconds = (time.perf_counter() - start) / args.steps
        results[name] = {"train_step_seconds": seconds,
                         "train_images_per_second": args.batch_size / seconds,
                         "warmup_seconds_3_steps": warmup}
    return results


def run_backend(backend, args):
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, __file__, "--child", f"--backbone={args.backbone}",
               f"--batch_size={args.batch_size}", f"--steps={args.steps}"]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                            timeout=3600).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet32")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    load_before = os.getloadavg()
    results = {backend: run_backend(backend, args) for backend in BACKENDS}
    for backend, variants in results.items():
        for name, result in variants.items():
            print(f"{backend:<11} {name:<16} {result['train_images_per_second']:8.1f} img/s")
    report = {
        "command": "python benchmarks/backend_throughput.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine.describe(),
                    "load_average_before_after": [load_before, os.getloadavg()]},
        "backbone": args.backbone, "batch_size": args.batch_size, "timed_steps": args.steps,
        "results": results,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       f"backend_throughput_{args.backbone}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
