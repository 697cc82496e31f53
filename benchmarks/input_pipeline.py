"""Throughput of the training input pipeline alone, on the real CIFAR-100.

Builds the pipeline exactly as `okddip_tf.data.load_datasets` does (full train
split, batch 128, augmentation on, in-memory cache), runs one warm-up epoch to
fill the cache, then times the next epoch: the time to its first batch (the
shuffle buffer refill), the steady-state rate over the following batches
(``images_per_second``) and the rate over that whole epoch.

Usage (from the repository root, with TFDS_DATA_DIR pointing at the tfds data):
  python benchmarks/input_pipeline.py [--batches 100] [--batch_size 128]

`--pipeline imagenet` measures the ImageNet-style pipeline (okddip_tf/data/imagenet.py) instead: it
writes a folder of JPEG files of ImageNet's typical size (500x375 and 375x500, quality 90,
smooth colour fields with noise) and times the training pipeline (decode inside the
random-resized crop window, resize to 224, flip; no cache) and the evaluation pipeline
(decode, resize 256, centre crop 224), writing benchmarks/results/input_pipeline_imagenet.json:
  python benchmarks/input_pipeline.py --pipeline imagenet [--images 512] [--batch_size 64]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from okddip_tf import data  # pylint: disable=wrong-import-position
from okddip_tf.reproduce import machine  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position  (after okddip_tf: oneDNN default)


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


def write_jpeg_folder(root, images, classes=8, seed=0):
    """`images` JPEG files of ImageNet's typical sizes in <root>/{train,val}/<class>/."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    for i in range(images):
        height, width = (375, 500) if i % 2 else (500, 375)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = rng.uniform(0, 255, 3) + 60 * np.sin(y[..., None] / rng.uniform(10, 60)) * \
            np.cos(x[..., None] / rng.uniform(10, 60))
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        for split in ("train", "val"):
            path = os.path.join(root, split, f"class{i % classes}", f"{i}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tf.io.write_file(path, tf.io.encode_jpeg(pixels, quality=90))


def measure_imagenet(images, batch_size, epochs=3):
    """Images/s of the ImageNet-style training (after one warm-up epoch) and evaluation pipelines."""
    with tempfile.TemporaryDirectory() as root:
        write_jpeg_folder(root, images)
        train_ds, eval_ds, info = data.load_datasets(
            source="folder", name="synthetic_jpeg", directory=root, train_split="train",
            eval_split="val", batch_size=batch_size, pipeline="imagenet", image_size=224,
            cache=False, seed=0, epochs=epochs)
        iterator = iter(train_ds)
        steps_per_epoch = info.num_train_examples // batch_size
        for _ in range(steps_per_epoch):  # warm-up epoch: file system cache, threads
            next(iterator)
        start = time.perf_counter()
        for _ in range(steps_per_epoch * (epochs - 1)):
            batch = next(iterator)
        _ = batch[0].numpy()
        train_s = time.perf_counter() - start
        sum(1 for _ in eval_ds)  # warm-up pass
        start = time.perf_counter()
        evaluated = sum(int(images.shape[0]) for images, _ in eval_ds)
        eval_s = time.perf_counter() - start
    return {
        "train_images_per_second": round(steps_per_epoch * (epochs - 1) * batch_size / train_s, 1),
        "eval_images_per_second": round(evaluated / eval_s, 1),
        "images": images,
        "image_sizes": "500x375 and 375x500 JPEG, quality 90",
        "batch_size": batch_size,
        "timed_train_epochs": epochs - 1,
        "timed_eval_passes": 1,
        "note": "each timed after one warm-up pass; no cache, files decoded every pass",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--pipeline", choices=["cifar", "imagenet"], default="cifar")
    parser.add_argument("--images", type=int, default=512, help="--pipeline imagenet: JPEGs")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.output is None:
        name = "input_pipeline.json" if args.pipeline == "cifar" else "input_pipeline_imagenet.json"
        args.output = str(REPO / "benchmarks/results" / name)
    load_before = os.getloadavg()[0]
    if args.pipeline == "imagenet":
        result = measure_imagenet(args.images, args.batch_size)
        command = (f"python benchmarks/input_pipeline.py --pipeline imagenet --images "
                   f"{args.images} --batch_size {args.batch_size}")
    else:
        result = measure(args.batches, args.batch_size)
        command = ("python benchmarks/input_pipeline.py "
                   f"--batches {args.batches} --batch_size {args.batch_size}")
    result.update({
        "machine": {**machine.describe(),
                    # Other processes share the CPUs; a load above cpu_count lowers the rate.
                    "load_average_1min_before_after": [round(load_before, 2),
                                                       round(os.getloadavg()[0], 2)]},
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.pipeline == "imagenet":
        print(f"imagenet pipeline: {result['train_images_per_second']:.0f} training and "
              f"{result['eval_images_per_second']:.0f} evaluation images/s on {os.cpu_count()} "
              "CPUs")
        return
    print(f"input pipeline: {result['images_per_second']:.0f} images/s over "
          f"{args.batches} batches of {args.batch_size}, "
          f"{result['epoch_images_per_second']:.0f} over a whole epoch (warm-up epoch "
          f"{result['warmup_epoch_seconds']} s, first batch after it "
          f"{result['first_batch_after_warmup_seconds']} s) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
