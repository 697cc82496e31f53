"""Evaluates exported .tflite files on the CIFAR test split with the LiteRT interpreter.

    pip install ai-edge-litert numpy tensorflow-datasets   # or: pip install -e ".[litert]"
    python export/evaluate_tflite.py runs/quickstart/export/leader/1/leader_*.tflite --examples=2000

For each file: accuracy, top-1 agreement with the first file given (list the float32 file first
to measure what quantisation costs), size and the mean time per batch. Images come from a
prepared tfds dataset (--data_dir or $TFDS_DATA_DIR; nothing is downloaded) or from an .npz with
`images` [N, H, W, 3] uint8 and `labels` [N]. Needs neither okddip_tf nor TensorFlow when the
images come from an .npz and ai-edge-litert is installed.
"""

import argparse
import functools
import os
import sys
import time
import warnings

import numpy as np


@functools.cache
def interpreter_class():
    """LiteRT's interpreter, or TensorFlow's deprecated one (said once on stderr) without it."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    except ImportError:
        try:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise SystemExit("Running .tflite files needs LiteRT: pip install ai-edge-litert "
                             "(or TensorFlow, whose interpreter is deprecated).") from None
        print("LiteRT (pip install ai-edge-litert) is not installed: running .tflite files with "
              "TensorFlow's deprecated tf.lite.Interpreter.", file=sys.stderr, flush=True)
        return tf.lite.Interpreter
    return Interpreter


def make_interpreter(path, num_threads=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TF's deprecation notice, said above
        return interpreter_class()(model_path=path, num_threads=num_threads or os.cpu_count())


class Classifier:
    """One .tflite leader: raw images in, float logits and probabilities out."""

    def __init__(self, path, num_threads=None):
        self.runner = make_interpreter(path, num_threads).get_signature_runner("serving_default")
        details = self.runner.get_input_details()["images"]
        self.dtype, self.quantization = np.dtype(details["dtype"]), details["quantization"]
        self.image_shape = tuple(int(d) for d in details["shape_signature"][1:])
        self.outputs = self.runner.get_output_details()

    def __call__(self, images):
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise ValueError(f"Expected images of shape [batch, {expected}] (raw pixels in "
                             f"[0, 255]), got {images.shape}.")
        if self.dtype == np.float32:
            images = images.astype(np.float32)
        else:  # full-integer file: quantise with its own input parameters
            scale, zero_point = self.quantization
            info = np.iinfo(self.dtype)
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
            images = images.astype(self.dtype)
        result = {}
        for name, value in self.runner(images=images).items():
            scale, zero_point = self.outputs[name]["quantization"]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero_point) * scale
            result[name] = value
        return result


def load_images(args):
    if args.npz:
        with np.load(args.npz) as data:
            images, labels = data["images"], data["labels"]
        return images[:args.examples], labels[:args.examples]
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    dataset = tfds.load(args.dataset, split=f"{args.split}[:{args.examples}]", as_supervised=True,
                        batch_size=-1, data_dir=args.data_dir, download=False)
    return tfds.as_numpy(dataset)


def evaluate(path, images, batch_size, num_threads=None):
    """(logits [N, C], seconds per batch) of one file."""
    classifier = Classifier(path, num_threads)
    logits, seconds = [], []
    for start in range(0, len(images), batch_size):
        begin = time.perf_counter()
        logits.append(classifier(images[start:start + batch_size])["logits"])
        seconds.append(time.perf_counter() - begin)
    return np.concatenate(logits), float(np.mean(seconds[1:] or seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".tflite files; the first is the reference")
    parser.add_argument("--examples", type=int, default=10000, help="first N test images")
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data_dir", default=None, help="tfds data dir ($TFDS_DATA_DIR)")
    parser.add_argument("--npz", default=None, help="images/labels .npz instead of tfds")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_threads", type=int, default=None)
    args = parser.parse_args(argv)
    images, labels = load_images(args)
    print(f"{len(labels)} images; batch {args.batch_size}")
    print(f"{'file':<34}{'size KiB':>10}{'accuracy':>10}{'agreement':>11}{'ms/batch':>10}")
    reference = None
    for path in args.models:
        logits, seconds = evaluate(path, images, args.batch_size, args.num_threads)
        predicted = logits.argmax(-1)
        reference = predicted if reference is None else reference
        print(f"{os.path.basename(path):<34}{os.path.getsize(path) / 1024:>10.1f}"
              f"{np.mean(predicted == labels):>10.4f}{np.mean(predicted == reference):>11.4f}"
              f"{1000 * seconds:>10.2f}")


if __name__ == "__main__":
    main()
