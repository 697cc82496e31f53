"""Seconds per CIFAR-100 epoch of OKDDip's 4-student ResNet-32 branch group under JAX.

    KERAS_BACKEND=jax python benchmarks/jax_epoch.py --npz=<cifar100_jpeg.npz> [--steps=N]

Trains with `model.fit` from a `keras.utils.PyDataset` (NumPy pad-4 crop + flip, batch 128, the
paper's optimiser and ramp-up) for two epochs of `--steps` steps each (default: a full epoch,
50,000 // 128 = 390 steps): the first compiles and warms up, the second is timed. Then times one
pass of `evaluate` over as many test images. TensorFlow is not needed.

The .npz holds either raw arrays (`x_train` [N, 32, 32, 3] uint8, `y_train`, `x_test`, `y_test`)
or the shared JPEG format (`train_jpeg` uint8 concatenated JPEG files, `train_offsets` int64 N+1,
`y_train`, and `test_*`), decoded with Pillow; only the images the run uses are decoded.
Writes benchmarks/results/jax_epoch_<label>.json (label: "cpu", or the GPU's name).
"""

import argparse
import datetime
import io
import json
import os
import platform
import re
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import okddip_tf  # noqa: E402

TRAIN_SIZE = 50_000


def load_split(data, split, count):
    """The first `count` images [count, 32, 32, 3] uint8 and labels [count] int32 of a split."""
    labels = np.asarray(data[f"y_{split}"][:count], dtype=np.int32).reshape(-1)
    if f"x_{split}" in data:
        return np.asarray(data[f"x_{split}"][:count], dtype=np.uint8), labels
    from PIL import Image

    blob, offsets = data[f"{split}_jpeg"], data[f"{split}_offsets"]
    images = np.stack([
        np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
        for i in range(count)
    ])
    return images, labels


def num_examples(data, split):
    return len(data[f"y_{split}"])


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches with the recipe's augmentation (pad 4, random 32x32 crop, random flip)."""

    def __init__(self, images, labels, batch_size, steps, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels, self.batch_size, self.steps = images, labels, batch_size, steps
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images))

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))

    def __getitem__(self, index):
        start = (index * self.batch_size) % (len(self.images) - self.batch_size + 1)
        picked = self.order[start:start + self.batch_size]
        padded = np.pad(self.images[picked], ((0, 0), (4, 4), (4, 4), (0, 0)))
        rng = np.random.default_rng([index, int(self.order[0])])
        rows, cols = rng.integers(0, 9, size=(2, len(picked)))
        flips = rng.random(len(picked)) < 0.5
        batch = np.empty_like(self.images[picked])
        for i, (r, c, flip) in enumerate(zip(rows, cols, flips)):
            crop = padded[i, r:r + 32, c:c + 32]
            batch[i] = crop[:, ::-1] if flip else crop
        return batch, self.labels[picked]


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float((logs or {}).get("loss", 0.0))  # the step's results are on the host
        self.seconds.append(time.perf_counter() - self.start)


def device_label(device):
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "_", device.device_kind.lower()).strip("_") or device.platform


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", required=True, help="CIFAR-100 .npz (raw arrays or JPEG).")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (default: a full epoch, 50,000 // batch_size)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--label", default=None, help="results file suffix (default: device)")
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        sys.exit(f"KERAS_BACKEND must be jax, got {keras.backend.backend()}.")

    full_steps = TRAIN_SIZE // args.batch_size
    steps = args.steps or full_steps
    data = np.load(args.npz)
    start = time.perf_counter()
    x_train, y_train = load_split(data, "train", min(num_examples(data, "train"),
                                                        steps * args.batch_size))
    test_count = min(num_examples(data, "test"), steps * args.batch_size)
    x_test, y_test = load_split(data, "test", test_count)
    decode_seconds = time.perf_counter() - start

    # No keras.utils.set_random_seed: it imports TensorFlow when installed (to seed it too).
    group = okddip_tf.GroupModel(backbone="resnet32", num_classes=100, num_students=4,
                                 sharing="branch", image_shape=(32, 32, 3))
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=full_steps))
    timer = EpochTimer()
    batches = AugmentedBatches(x_train, y_train, args.batch_size, steps)
    history = group.fit(batches, epochs=2, verbose=2,
                        callbacks=[timer, okddip_tf.DistillWeightRampup(length=80)])
    group.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)  # compiles
    start = time.perf_counter()
    group.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)
    eval_seconds = time.perf_counter() - start

    timed = timer.seconds[1]
    images_per_second = steps * args.batch_size / timed
    device = jax.devices()[0]
    label = args.label or device_label(device)
    report = {
        "command": " ".join(
            ["python benchmarks/jax_epoch.py", f"--npz={os.path.basename(args.npz)}"]
            + [f"--{k}={v}" for k, v in vars(args).items() if k != "npz" and v is not None]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "note": ("a full epoch" if steps >= full_steps else
                 f"{steps} steps per epoch only: a smoke run, not a representative timing"),
        "machine": {"device": device.device_kind, "platform": device.platform,
                    "device_count": jax.device_count(),
                    "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                    "jax": jax.__version__,
                    "keras": keras.__version__},
        "model": "okddip, resnet32, 4 students, branch sharing, CIFAR-100",
        "batch_size": args.batch_size,
        "steps_per_epoch": steps,
        "decode_seconds": decode_seconds,
        "warmup_epoch_seconds": timer.seconds[0],
        "timed_epoch_seconds": timed,
        "train_images_per_second": images_per_second,
        "seconds_per_full_epoch": full_steps * args.batch_size / images_per_second,
        "eval_images": test_count,
        "eval_images_per_second": test_count / eval_seconds,
        "final_loss": float(history.history["loss"][-1]),
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       f"jax_epoch_{label}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    if "tensorflow" in sys.modules:
        print("note: something imported TensorFlow")
    print("wrote", out)


if __name__ == "__main__":
    main()
