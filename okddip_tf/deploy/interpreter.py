"""The interpreter every .tflite file runs on: LiteRT's (`ai-edge-litert`), where installed.

TensorFlow 2.21 deprecates `tf.lite.Interpreter` and schedules it for deletion in favour of
LiteRT, which has the same API and no TensorFlow dependency. It stays here only as a fallback
for installs without LiteRT, announced by one line on stderr (once per process) in place of
TensorFlow's own multi-line deprecation warning.
"""

import functools
import importlib.metadata
import os
import sys
import warnings

FALLBACK_NOTE = ("LiteRT (pip install ai-edge-litert) is not installed: running .tflite files "
                 "with TensorFlow's deprecated tf.lite.Interpreter.")


@functools.cache
def runtime():
    """(Interpreter class, OpResolverType enum): LiteRT's, else TensorFlow's (said once)."""
    try:
        from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
    except ImportError:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        print(FALLBACK_NOTE, file=sys.stderr, flush=True)
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return litert.Interpreter, litert.OpResolverType


def describe():
    """Which interpreter runs the files, and its version, in words (for benchmark records)."""
    interpreter_class, _ = runtime()
    if interpreter_class.__module__.startswith("ai_edge_litert"):
        return f"LiteRT (ai-edge-litert {importlib.metadata.version('ai-edge-litert')})"
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


def make_interpreter(model_path=None, model_content=None, num_threads=None, *,
                     keep_all_tensors=False):
    """An interpreter for one .tflite file (a path or its bytes).

    Args:
      model_path, model_content: the file, or its bytes.
      num_threads: CPU threads; defaults to all cores.
      keep_all_tensors: keep every intermediate tensor readable after `invoke` (for
        calibration). This also leaves out the default (XNNPACK) delegate: a delegated graph
        does not write its intermediate tensors back, so they would read stale.
    """
    interpreter_class, op_resolver_type = runtime()
    options = {}
    if keep_all_tensors:
        no_delegates = op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        options = dict(experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=no_delegates)
    with warnings.catch_warnings():
        # TF's interpreter warns that it is deprecated (said once above), and both warn that
        # keeping every tensor is meant for debugging: known and intended.
        warnings.simplefilter("ignore", UserWarning)
        return interpreter_class(model_path=model_path, model_content=model_content,
                                 num_threads=num_threads or os.cpu_count(), **options)
