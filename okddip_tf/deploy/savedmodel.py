"""The TF Serving SavedModel of a leader: signatures, class-name asset, and running it.

The signatures take the backbone's input, named and typed after its `InputSpec` (dynamic batch):
  images (raw pixels [0, 255], the trained height, width and channels):
    serving_default: images float32        serving_uint8: images uint8
  token ids:  serving_default: token_ids int32 [B, T]
  features:   serving_default: features float32 [B, F]    (frames [B, T, F] alike)
  outputs: logits [B, C] float32, probabilities [B, C] float32 (softmax), class_ids [B] int64,
           class_names [B] string (the label of class_ids; its decimal id without names)
The graph needs only TensorFlow: `tf.saved_model.load` works without okddip_tf or Keras.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from okddip_tf.inputs import image_spec

SIGNATURES = {"serving_default": tf.float32, "serving_uint8": tf.uint8}  # of image leaders
CLASS_NAMES_ASSET = "class_names.txt"
SAVED_MODEL_FILES = ("saved_model.pb", "fingerprint.pb", "variables", "assets")


def signatures(spec):
    """Signature name -> input dtype for inputs of `spec` (an `InputSpec`)."""
    if spec.is_image:
        return dict(SIGNATURES)
    return {"serving_default": tf.as_dtype(tensor_dtype(spec))}


def tensor_dtype(spec):
    """What the exported graph computes on: float32, or int32 for integer inputs."""
    return "int32" if spec.is_integer else "float32"


def write_saved_model(leader, spec, class_names, directory):
    """Writes the SavedModel of `leader` (raw inputs -> logits) with `signatures(spec)`.

    `spec` is the leader's `InputSpec` (an image shape (H, W, C) is taken as images)."""
    import keras  # pylint: disable=import-outside-toplevel

    spec = as_spec(spec)
    with tempfile.TemporaryDirectory() as scratch:
        names_file = os.path.join(scratch, CLASS_NAMES_ASSET)  # copied into assets/
        with open(names_file, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            names_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

        def serve(inputs):
            logits = leader(checked_inputs(inputs, spec), training=False)
            class_ids = tf.argmax(logits, axis=-1)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                    "class_ids": class_ids, "class_names": table.lookup(class_ids)}

        archive = keras.export.ExportArchive()
        # Not archive.track(leader): Keras 3.15 then stores every weight twice (under
        # `variables/` and `_all_variables/`). Endpoints track the variables they use.
        archive.track(table)
        for name, dtype in signatures(spec).items():
            tensor_spec = tf.TensorSpec((None,) + spec.shape, dtype, name=spec.name)
            archive.add_endpoint(name, serve, input_signature=[tensor_spec])
        archive.write_out(directory, verbose=False)


def as_spec(spec_or_image_shape):
    """An `InputSpec`; an image shape (H, W, C) (the argument of earlier versions) as images."""
    if hasattr(spec_or_image_shape, "kind"):
        return spec_or_image_shape
    return image_spec(tuple(spec_or_image_shape), channels=spec_or_image_shape[-1])


def checked_inputs(inputs, spec):
    """`inputs` as float32 (int32 for integer specs) once their shape is [batch, *spec.shape];
    else a clear error.

    A signature does not check the shape it is fed (a wrong rank can even abort the process in
    oneDNN's convolution), so the check runs before any layer does.
    """
    rank = len(spec.shape)
    shape = tf.shape(inputs)
    padded = tf.concat([shape, tf.zeros([rank + 1], tf.int32)], axis=0)  # lower ranks compare
    ok = tf.logical_and(tf.equal(tf.size(shape), rank + 1),
                        tf.reduce_all(tf.equal(padded[1:rank + 1], spec.shape)))
    expected = f"[batch, {', '.join(map(str, spec.shape))}]"
    what = " (raw pixels in [0, 255], channels last)" if spec.is_image else ""
    message = f"Expected {spec.name} of shape {expected}{what}, got shape"
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape], summarize=8)]):
        # identity: a cast to the same dtype creates no op that could carry the dependency.
        return tf.identity(tf.cast(inputs, tensor_dtype(spec)))


def predict(directory, inputs, signature="serving_default", batch_size=256):
    """Runs a signature of the SavedModel in `directory` on NumPy inputs; a dict of arrays."""
    serving = tf.saved_model.load(directory).signatures[signature]
    (name, tensor_spec), = serving.structured_input_signature[1].items()
    parts = [serving(**{name: tf.constant(inputs[i:i + batch_size], tensor_spec.dtype)})
             for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([p[name].numpy() for p in parts]) for name in parts[0]}


def count_parameters(directory):
    """Scalars in the SavedModel's variables: what it would serve, counted from the files."""
    variables = tf.train.list_variables(os.path.join(directory, "variables", "variables"))
    return int(sum(np.prod(shape) for name, shape in variables
                   if name.endswith("VARIABLE_VALUE")))


def size_bytes(directory):
    """Bytes of the SavedModel's own files (not of anything else in the directory)."""
    total = 0
    for name in SAVED_MODEL_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            total += os.path.getsize(path)
        for root, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
