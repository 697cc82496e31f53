"""TFLite conversion of a leader and a small runner for the converted files.

Conversion goes through a SavedModel and `TFLiteConverter.from_saved_model`: on TF 2.21,
`from_concrete_functions` with a Keras 3 model leaves the weights unfrozen and gives NaNs.
Every file has one `serving_default` signature: the leader's input, named after its `InputSpec`
(`images`, raw pixels in [0, 255]; `token_ids`; `features`; dynamic batch), and outputs `logits`
and `probabilities`.
"""

import numpy as np
import tensorflow as tf

from okddip_tf import compat
from okddip_tf.deploy import calibration
from okddip_tf.deploy.savedmodel import as_spec, tensor_dtype
from okddip_tf.deploy.interpreter import make_interpreter
from okddip_tf.errors import UsageError

# name -> what it is. The order is the export order.
FORMATS = {
    "float32": "float32 weights and activations (reference)",
    "float16": "float16 weights, float32 compute",
    "dynamic_int8": "int8 weights, activations quantised on the fly (dynamic range)",
    "int8": "full-integer int8: int8 weights and activations, int8 out; uint8 pixels in "
            "(token ids stay int32, other inputs float32, quantised inside)",
}
NEEDS_REPRESENTATIVE_IMAGES = ("int8",)
CALIBRATION_BATCH = 1


def write_conversion_model(leader, spec, directory):
    """A SavedModel with only what TFLite needs: inputs (float32, or int32 for integer inputs)
    -> logits, probabilities. `spec`: the leader's `InputSpec`, or an image shape (H, W, C)."""
    import keras  # pylint: disable=import-outside-toplevel

    spec = as_spec(spec)

    def serve(inputs):
        logits = leader(inputs, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = keras.export.ExportArchive()  # tracks the variables the endpoint uses
    tensor_spec = tf.TensorSpec((None,) + spec.shape, tensor_dtype(spec), name=spec.name)
    archive.add_endpoint("serving_default", serve, input_signature=[tensor_spec])
    archive.write_out(directory, verbose=False)
    return directory


def convert(saved_model_dir, fmt, representative_images=None, *,
            int8_calibration="percentile", percentile=calibration.DEFAULT_PERCENTILE):
    """Converts a SavedModel to TFLite in one of `FORMATS`; returns the flatbuffer bytes.

    Args:
      saved_model_dir: a SavedModel from `write_conversion_model`.
      fmt: a key of `FORMATS`.
      representative_images: raw training inputs of the leader's kind (images [N, H, W, 3],
        token ids [N, T], ...; needed for "int8"); the calibration sees them one at a time.
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
        tensor_spec = saved_model_input(saved_model_dir)
        examples = as_input_dtype(representative_images, tensor_spec)

        def calibration_data():
            for start in range(0, len(examples), CALIBRATION_BATCH):
                yield [examples[start:start + CALIBRATION_BATCH]]

        converter.representative_dataset = calibration_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if tensor_spec.name == "images" and tensor_spec.shape.rank == 4:
            # With pixels in [0, 255] the calibrated input scale is 1 and the zero point 0 in
            # uint8, so raw uint8 pixels go in unchanged.
            converter.inference_input_type = tf.uint8
        # Other inputs keep their type: integer ids are not quantised (they index an
        # embedding), float features are quantised by the file's first op.
        converter.inference_output_type = tf.int8
    return converter


def saved_model_input(saved_model_dir):
    """The `tf.TensorSpec` of a conversion model's single input (name and dtype included)."""
    signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    (tensor_spec,) = signature.structured_input_signature[1].values()
    return tensor_spec


def as_input_dtype(examples, tensor_spec):
    """NumPy `examples` in the dtype a model input takes (ids stay exact integers)."""
    return np.asarray(examples).astype(tensor_spec.dtype.as_numpy_dtype)


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
    """Runs a converted leader on batches of raw inputs; returns float logits/probabilities.

    Quantised inputs and outputs are (de)quantised with the file's own parameters. The input is
    the file's single one (`images`, `token_ids`, `features`, ...: `input_name`).
    """

    def __init__(self, model_path=None, model_content=None, num_threads=None):
        self.interpreter = make_interpreter(model_path, model_content, num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        (self.input_name, details), = self.runner.get_input_details().items()
        self.input_dtype = np.dtype(details["dtype"])
        self.input_quantization = details["quantization"]
        self.input_shape = tuple(int(d) for d in details["shape_signature"][1:])
        self.image_shape = self.input_shape  # the name of earlier versions (image leaders)
        self.output_details = self.runner.get_output_details()

    def prepare(self, inputs):
        """Checks the shape and converts raw inputs to the file's input type."""
        inputs = np.asarray(inputs)
        if inputs.shape[1:] != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            what = (" (raw pixels in [0, 255], channels last)" if self.input_name == "images"
                    else "")
            raise ValueError(f"Expected {self.input_name} of shape [batch, {expected}]{what}, "
                             f"got {inputs.shape}.")
        scale, zero_point = self.input_quantization
        if not scale:  # float or integer ids: the values as they are
            return inputs.astype(self.input_dtype)
        info = np.iinfo(self.input_dtype)
        quantised = np.round(inputs.astype(np.float32) / scale + zero_point)
        return np.clip(quantised, info.min, info.max).astype(self.input_dtype)

    def __call__(self, inputs):
        outputs = self.runner(**{self.input_name: self.prepare(inputs)})
        result = {}
        for name, value in outputs.items():
            scale, zero_point = self.output_details[name]["quantization"]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero_point) * scale
            result[name] = value
        return result

    def predict(self, inputs, batch_size=256):
        """`self(inputs)` in batches; a dict of concatenated float arrays."""
        parts = [self(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
