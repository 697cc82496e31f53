"""TensorFlow's start-up log lines, kept off the `okddip` command's output unless asked for.

What TensorFlow 2.21's CPU/CUDA pip wheel prints on a machine without a GPU driver, and what
hides each line (measured; C++ log levels: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR):

- "cpu_feature_guard ... This TensorFlow binary is optimized to use available CPU instructions":
  an INFO line, hidden by TF_CPP_MIN_LOG_LEVEL >= 1.
- "cuda_platform ... failed call to cuInit: ... UNKNOWN ERROR (303)": an ERROR line written when
  TensorFlow first looks for devices; only TF_CPP_MIN_LOG_LEVEL=3 hides it.
- "cudart_stub ... Could not find cuda drivers on your machine", after absl's "WARNING: All log
  messages before absl::InitializeLog() is called are written to STDERR" (twice): written while
  `import tensorflow` loads its shared libraries, before TensorFlow reads TF_CPP_MIN_LOG_LEVEL,
  so no log level hides them. `quieten` captures file descriptor 2 around the import and writes
  back every other line.
- TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." and the converter's
  "fully_quantize: 0, inference_type: 6, ..." ignore the log level too; `notices_dropped` drops
  them around `okddip export`'s conversions once the command line has called `quieten`.

So the command sets TF_CPP_MIN_LOG_LEVEL (unless it is set already) to 3 where no NVIDIA driver is
loaded (nothing CUDA says there concerns the run; TensorFlow's errors still reach Python as
exceptions) and to 2 where one is, before TensorFlow is first imported. `--tf_logs` or
OKDDIP_TF_LOGS=1 leaves TensorFlow's logging as it is (TF_CPP_MIN_LOG_LEVEL, when set, still
applies).
"""

import contextlib
import os
import sys
import tempfile

ENV_SHOW = "OKDDIP_TF_LOGS"
# Start-up lines written before TensorFlow applies TF_CPP_MIN_LOG_LEVEL.
UNFILTERABLE = ("All log messages before absl::InitializeLog() is called are written to STDERR",
                "Could not find cuda drivers on your machine, GPU will not be used.",
                # okddip_tf turns oneDNN on (okddip_tf/__init__.py); TF announces it at import.
                "oneDNN custom operations are on.")
# Notices TFLite prints on every conversion or interpreter whatever the log level.
TFLITE_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                  "fully_quantize: 0, inference_type: ")
_quiet = False  # set by the command line (`quieten`); library callers see every line


def has_nvidia_driver():
    return os.path.exists("/proc/driver/nvidia/version")


def default_log_level():
    return "2" if has_nvidia_driver() else "3"


def set_log_level():
    """TF_CPP_MIN_LOG_LEVEL for a quiet start, unless the environment sets it; call before TF."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", default_log_level())


def is_notice(line):
    return any(text in line for text in UNFILTERABLE + TFLITE_NOTICES)


@contextlib.contextmanager
def notices_dropped(always=False):
    """Captures file descriptor 2 (C++ writes too) and writes back all but the known notices.

    Only when the command line asked for quiet (or `always`); otherwise it changes nothing.
    """
    if not (_quiet or always):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                                     if not is_notice(line)))
            sys.stderr.flush()


def quieten():
    """Imports TensorFlow without its start-up notices, and drops TFLite's from now on."""
    global _quiet  # pylint: disable=global-statement
    _quiet = True
    if "tensorflow" not in sys.modules:
        with notices_dropped():
            try:
                import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            except ImportError:  # a JAX-only machine: nothing to quieten
                pass
