"""Throughput of the training input pipeline alone, on the real CIFAR-100.

Builds the pipeline exactly as `okddip_tf.data.load_datasets` does (full train
split, batch 128, augmentation on, in-memory cache), runs one warm-up epoch to
fill the cache, then times the next epoch: the time to its first batch (the
shuffle buffer refill), the steady-state rate over the following batches
(``images_per_second``) and the rate over that whole epoch.

Usage (from the repository root, with TFDS_DATA_DIR pointing at the tfds data):
  python benchmarks/input_pipeline.py [--batches 100] [--batch_size 128]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=wrong-import-position

from okddip_tf import data  # pylint: disable=wrong-import-position


def measure(batches, batch_size):
    """Returns a dict of timings for the training pipeline of load_datasets."""
    train_ds, _, info = data.load_datasets(name="cifar100", batch_size=batch_size,
                                           augment=True, cache=True, seed=0)
    start = time.perf_counter()
    warmup_batches = sum(1 for _ in train_ds)  # fills the cache
    warmup_s = time.perf_counter() - start

    epoch_start = time.perf_counter()
    iterator = iter(train_ds)
    next(iterator)
    first_batch_s = time.perf_counter() - epoch_start
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    _ = images.numpy()
    steady_s = time.perf_counter() - start
    remaining = sum(1 for _ in iterator)
    epoch_s = time.perf_counter() - epoch_start
    return {
        "images_per_second": round(batches * batch_size / steady_s, 1),
        "batches": batches,
        "batch_size": batch_size,
        "num_train_examples": info.num_train_examples,
        "warmup_epoch_seconds": round(warmup_s, 2),
        "warmup_epoch_batches": warmup_batches,
        "first_batch_after_warmup_seconds": round(first_batch_s, 3),
        "epoch_images_per_second": round((remaining + batches + 1) * batch_size / epoch_s, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output", default=str(REPO / "benchmarks/results/input_pipeline.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    result = measure(args.batches, args.batch_size)
    result.update({
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                    "python": platform.python_version(),
                    # Other processes share the CPUs; a load above cpu_count lowers the rate.
                    "load_average_1min_before_after": [round(load_before, 2),
                                                       round(os.getloadavg()[0], 2)]},
        "command": "python benchmarks/input_pipeline.py "
                   f"--batches {args.batches} --batch_size {args.batch_size}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"input pipeline: {result['images_per_second']:.0f} images/s over "
          f"{args.batches} batches of {args.batch_size}, "
          f"{result['epoch_images_per_second']:.0f} over a whole epoch (warm-up epoch "
          f"{result['warmup_epoch_seconds']} s, first batch after it "
          f"{result['first_batch_after_warmup_seconds']} s) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
