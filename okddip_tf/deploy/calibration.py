"""Percentile calibration of activation ranges for the full-integer int8 TFLite file.

TFLite's calibrator sets each activation tensor's int8 range to the minimum and maximum it saw
on the representative images. One outlier then stretches the range, and every other value of
that tensor is rounded to a coarser step. Clipping each range to a high percentile of the
values instead (Wu et al. 2020, "Integer Quantization for Deep Learning Inference", sec. 4.2:
99.99% or 99.999% suit CNN activations) trades rare clipping for finer steps everywhere.

The steps: calibrate only (the float model with each tensor's observed min/max), run that float
model with every intermediate tensor kept, track each tensor's tails, narrow the recorded ranges
to the percentiles, then quantise with the new ranges.

Even the 100th percentile narrows some ranges: on TF 2.21 the calibrator records, for a
convolution output feeding a residual ADD, a maximum above any value that tensor takes (found in
a ResNet-20 block by comparing with the Keras layer's output on the same images), so those
tensors were quantised with needlessly coarse steps. That the 100th percentile and TFLite's own
min/max give different int8 files is in benchmarks/results/int8_calibration_*.json
(`benchmarks/int8_calibration.py`); the recorded and true maxima themselves are not.
"""

import math

import numpy as np

from okddip_tf import compat

METHODS = ("percentile", "minmax")
DEFAULT_PERCENTILE = 99.999
BATCH = 50


def check_method(method):
    """Raises a ValueError naming the known methods when `method` is not one."""
    if method not in METHODS:
        raise ValueError(f"Unknown int8 calibration {method!r}; choose from {list(METHODS)}.")


class TailTracker:
    """The `percentile`-th and (100 - `percentile`)-th values of a stream of arrays.

    Keeps only the k largest and k smallest values seen, where k follows from `total`, the
    number of values the stream will hold. The results equal
    `np.percentile(all_values, percentile, method="inverted_cdf")` (upper) and the same of the
    negated values, negated (lower): nearest-rank order statistics.
    """

    def __init__(self, percentile, total):
        if not 50 < percentile <= 100:
            raise ValueError(f"Expected a percentile in (50, 100], got {percentile}.")
        if total < 1:
            raise ValueError(f"Expected a positive number of values, got {total}.")
        self.total = int(total)
        # The upper value's 0-based ascending rank is ceil(q * total) - 1.
        self.k = self.total - (math.ceil(percentile / 100 * self.total) - 1)
        self.largest = np.empty(0, np.float64)
        self.smallest = np.empty(0, np.float64)
        self.seen = 0

    def update(self, values):
        values = np.asarray(values, np.float64).ravel()
        self.seen += values.size
        if self.seen > self.total:
            raise ValueError(f"Saw {self.seen} values, more than the {self.total} announced.")
        self.largest = _extreme(np.concatenate([self.largest, values]), self.k, largest=True)
        self.smallest = _extreme(np.concatenate([self.smallest, values]), self.k, largest=False)

    def bounds(self):
        """(lower, upper) over everything seen; all `total` values must have been seen."""
        if self.seen != self.total:
            raise ValueError(f"Saw {self.seen} values of the {self.total} announced.")
        return float(self.smallest.max()), float(self.largest.min())


def _extreme(values, k, *, largest):
    if values.size <= k:
        return values
    if largest:
        return np.partition(values, values.size - k)[values.size - k:]
    return np.partition(values, k - 1)[:k]


def narrow_ranges(calibrated_model, images, percentile=DEFAULT_PERCENTILE):
    """Returns `calibrated_model` (TFLite bytes from calibrate-only) with percentile ranges.

    `images`: the representative inputs (raw images, or token ids, features, ... of the
    model's input). Ranges only ever shrink; the model inputs keep theirs (raw pixels map
    exactly), and a range's sign structure is kept (a ReLU output's minimum stays 0).
    Returns (new model bytes, {tensor name: (old_min, old_max, new_min, new_max)}).
    """
    from okddip_tf.deploy import interpreter as runtime  # pylint: disable=import-outside-toplevel

    model = compat.tflite_model_object(calibrated_model)
    if len(model.subgraphs) != 1:
        raise ValueError(f"Expected a single-subgraph model, got {len(model.subgraphs)}.")
    subgraph = model.subgraphs[0]
    ranged = [i for i, t in enumerate(subgraph.tensors)
              if i not in subgraph.inputs and _has_range(t) and not _is_constant(model, t)]

    # LiteRT's interpreter keeps every intermediate tensor as TF's does (tests/test_litert.py):
    # on a ResNet-20, 36 of its 37 narrowed ranges came out the same and one 6e-8 apart.
    interpreter = runtime.make_interpreter(model_content=bytes(calibrated_model),
                                           keep_all_tensors=True)
    input_details = interpreter.get_input_details()[0]
    input_index = input_details["index"]
    images = np.asarray(images).astype(input_details["dtype"])  # ids stay integers
    trackers = {}
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        interpreter.resize_tensor_input(input_index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        for i in ranged:
            values = interpreter.get_tensor(i)
            if i not in trackers:
                per_image = values.size // len(batch)
                trackers[i] = TailTracker(percentile, per_image * len(images))
            trackers[i].update(values)

    changes = {}
    for i in ranged:
        quantization = subgraph.tensors[i].quantization
        old_min, old_max = float(quantization.min[0]), float(quantization.max[0])
        lower, upper = trackers[i].bounds()
        new_min = old_min if old_min >= 0 else min(max(lower, old_min), 0.0)
        new_max = old_max if old_max <= 0 else max(min(upper, old_max), 0.0)
        quantization.min = np.array([new_min], np.float32)
        quantization.max = np.array([new_max], np.float32)
        changes[subgraph.tensors[i].name.decode()] = (old_min, old_max, new_min, new_max)
    return compat.tflite_model_bytes(model), changes


def _has_range(tensor):
    q = tensor.quantization
    return (q is not None and q.min is not None and q.max is not None
            and len(q.min) == 1 and len(q.max) == 1)


def _is_constant(model, tensor):
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0
