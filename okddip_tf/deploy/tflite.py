"""TFLite conversion of a leader and a small runner for the converted files.

Conversion goes through a SavedModel and `TFLiteConverter.from_saved_model`: on TF 2.21,
`from_concrete_functions` with a Keras 3 model leaves the weights unfrozen and gives NaNs.
Every file has one `serving_default` signature: input `images` (raw pixels in [0, 255],
dynamic batch) and outputs `logits` and `probabilities`.
"""

import numpy as np
import tensorflow as tf

from okddip_tf import compat
from okddip_tf.deploy import calibration
from okddip_tf.deploy.interpreter import make_interpreter
from okddip_tf.errors import UsageError

# name -> what it is. The order is the export order.
FORMATS = {
    "float32": "float32 weights and activations (reference)",
    "float16": "float16 weights, float32 compute",
    "dynamic_int8": "int8 weights, activations quantised on the fly (dynamic range)",
    "int8": "full-integer int8: int8 weights and activations, uint8 pixels in, int8 out",
}
NEEDS_REPRESENTATIVE_IMAGES = ("int8",)
CALIBRATION_BATCH = 1


def write_conversion_model(leader, image_shape, directory):
    """A SavedModel with only what TFLite needs: images (float32) -> logits, probabilities."""
    import keras  # pylint: disable=import-outside-toplevel

    def serve(images):
        logits = leader(images, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = keras.export.ExportArchive()  # tracks the variables the endpoint uses
    spec = tf.TensorSpec((None,) + tuple(image_shape), tf.float32, name="images")
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.write_out(directory, verbose=False)
    return directory


def convert(saved_model_dir, fmt, representative_images=None, *,
            int8_calibration="percentile", percentile=calibration.DEFAULT_PERCENTILE):
    """Converts a SavedModel to TFLite in one of `FORMATS`; returns the flatbuffer bytes.

    Args:
      saved_model_dir: a SavedModel from `write_conversion_model`.
      fmt: a key of `FORMATS`.
      representative_images: [N, H, W, 3] raw training images (needed for "int8"); the
        calibration sees them one at a time.
      int8_calibration: how "int8" sets activation ranges: "percentile" (each tensor's
        `percentile`-th value, see okddip_tf/deploy/calibration.py) or "minmax" (TFLite's own).
    """
    calibration.check_method(int8_calibration)
    converter = make_converter(saved_model_dir, fmt, representative_images)
    if fmt == "int8" and int8_calibration == "percentile":
        narrowed, _ = calibration.narrow_ranges(calibrate_only(converter), representative_images,
                                                percentile)
        return quantize_calibrated(narrowed, converter)
    return converter.convert()


def make_converter(saved_model_dir, fmt, representative_images=None):
    """A `TFLiteConverter` set up for `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown TFLite format {fmt!r}; known: {list(FORMATS)}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if fmt != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if fmt == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise UsageError("Full-integer int8 needs representative images from the training "
                             "split to calibrate the activation ranges; pass some, or leave "
                             "'int8' out of the formats.")
        images = np.asarray(representative_images, np.float32)

        def calibration_data():
            for start in range(0, len(images), CALIBRATION_BATCH):
                yield [images[start:start + CALIBRATION_BATCH]]

        converter.representative_dataset = calibration_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # With pixels in [0, 255] the calibrated input scale is 1 and the zero point 0 in
        # uint8, so raw uint8 pixels go in unchanged.
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter


def calibrate_only(converter):
    """The float model with the activation ranges TFLite's calibrator recorded (bytes)."""
    compat.calibrate_only(converter, True)
    try:
        return converter.convert()
    finally:
        compat.calibrate_only(converter, False)


def quantize_calibrated(calibrated, converter):
    """What `converter.convert()` does after calibrating, for a (re-ranged) calibrated model:
    the same MLIR quantiser with the converter's input and output types."""
    return compat.quantize_calibrated(calibrated, converter.inference_input_type,
                                      converter.inference_output_type)


class TFLiteClassifier:
    """Runs a converted leader on batches of raw images; returns float logits/probabilities.

    Quantised inputs and outputs are (de)quantised with the file's own parameters.
    """

    def __init__(self, model_path=None, model_content=None, num_threads=None):
        self.interpreter = make_interpreter(model_path, model_content, num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        details = self.runner.get_input_details()["images"]
        self.input_dtype = np.dtype(details["dtype"])
        self.input_quantization = details["quantization"]
        self.image_shape = tuple(int(d) for d in details["shape_signature"][1:])
        self.output_details = self.runner.get_output_details()

    def prepare(self, images):
        """Checks the shape and converts raw pixels to the file's input type."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise ValueError(f"Expected images of shape [batch, {expected}] (raw pixels in "
                             f"[0, 255], channels last), got {images.shape}.")
        if self.input_dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        quantised = np.round(images.astype(np.float32) / scale + zero_point)
        return np.clip(quantised, info.min, info.max).astype(self.input_dtype)

    def __call__(self, images):
        outputs = self.runner(images=self.prepare(images))
        result = {}
        for name, value in outputs.items():
            scale, zero_point = self.output_details[name]["quantization"]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero_point) * scale
            result[name] = value
        return result

    def predict(self, images, batch_size=256):
        """`self(images)` in batches; a dict of concatenated float arrays."""
        parts = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
