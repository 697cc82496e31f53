"""The TF Serving SavedModel of a leader: signatures, class-name asset, and running it.

Signatures (both: dynamic batch, the trained height and width, 3 channels, raw pixels [0, 255]):
  serving_default: images float32        serving_uint8: images uint8
  outputs: logits [B, C] float32, probabilities [B, C] float32 (softmax), class_ids [B] int64,
           class_names [B] string (the label of class_ids; its decimal id without names)
The graph needs only TensorFlow: `tf.saved_model.load` works without okddip_tf or Keras.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

SIGNATURES = {"serving_default": tf.float32, "serving_uint8": tf.uint8}
CLASS_NAMES_ASSET = "class_names.txt"
SAVED_MODEL_FILES = ("saved_model.pb", "fingerprint.pb", "variables", "assets")


def write_saved_model(leader, image_shape, class_names, directory):
    """Writes the SavedModel of `leader` (raw images -> logits) with `SIGNATURES`."""
    import keras  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as scratch:
        names_file = os.path.join(scratch, CLASS_NAMES_ASSET)  # copied into assets/
        with open(names_file, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            names_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

        def serve(images):
            logits = leader(checked_images(images, image_shape), training=False)
            class_ids = tf.argmax(logits, axis=-1)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                    "class_ids": class_ids, "class_names": table.lookup(class_ids)}

        archive = keras.export.ExportArchive()
        # Not archive.track(leader): Keras 3.15 then stores every weight twice (under
        # `variables/` and `_all_variables/`). Endpoints track the variables they use.
        archive.track(table)
        for name, dtype in SIGNATURES.items():
            spec = tf.TensorSpec((None,) + tuple(image_shape), dtype, name="images")
            archive.add_endpoint(name, serve, input_signature=[spec])
        archive.write_out(directory, verbose=False)


def checked_images(images, image_shape):
    """`images` as float32 once their shape is [batch, H, W, C]; else a clear error.

    A signature does not check the shape it is fed (a wrong rank can even abort the process in
    oneDNN's convolution), so the check runs before any layer does.
    """
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)  # rank < 4 still compares
    ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                        tf.reduce_all(tf.equal(padded[1:4], image_shape)))
    expected = f"[batch, {', '.join(map(str, image_shape))}]"
    message = (f"Expected images of shape {expected} (raw pixels in [0, 255], channels last), "
               "got shape")
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape], summarize=8)]):
        # identity: a float32 -> float32 cast creates no op that could carry the dependency.
        return tf.identity(tf.cast(images, tf.float32))


def predict(directory, images, signature="serving_default", batch_size=256):
    """Runs a signature of the SavedModel in `directory` on NumPy images; a dict of arrays."""
    serving = tf.saved_model.load(directory).signatures[signature]
    dtype = SIGNATURES[signature]
    parts = [serving(images=tf.constant(images[i:i + batch_size], dtype))
             for i in range(0, len(images), batch_size)]
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
