"""TensorBoard logging that works with and without TensorFlow installed.

With TensorFlow, Keras' own TensorBoard callback. Without it (e.g. a JAX-only GPU machine),
`EpochScalars` writes the same per-epoch scalars (`train/` and `validation/`, tags `epoch_<key>`)
with the `tensorboard` package's TensorFlow-free event writer; without that package either,
TensorBoard logging is skipped with one line saying so. Logging never stops a run.
"""

import importlib.util
import os
import time

import keras


def tensorflow_available():
    """Whether `import tensorflow` would succeed (without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def tensorboard_writer_available():
    try:
        # pylint: disable-next=import-outside-toplevel,unused-import
        from tensorboard.summary.writer import event_file_writer  # noqa: F401
    except ImportError:
        return False
    return True


class EpochScalars(keras.callbacks.Callback):
    """Writes every epoch's logged scalars as TensorBoard events, without TensorFlow."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def writer(self, name):
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if name not in self.writers:
            self.writers[name] = EventFileWriter(os.path.join(self.log_dir, name))
        return self.writers[name]

    def on_epoch_end(self, epoch, logs=None):
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = {"train": [], "validation": []}
        for key, value in (logs or {}).items():
            split, key = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            values[split].append(summary_pb2.Summary.Value(tag=f"epoch_{key}",
                                                           simple_value=float(value)))
        for split, split_values in values.items():
            if split_values:
                self.writer(split).add_event(event_pb2.Event(
                    wall_time=time.time(), step=epoch,
                    summary=summary_pb2.Summary(value=split_values)))
                self.writer(split).flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard_callbacks(log_dir):
    """The callbacks writing TensorBoard logs into `log_dir` in this environment (maybe none)."""
    if tensorflow_available():
        return [keras.callbacks.TensorBoard(log_dir)]
    if tensorboard_writer_available():
        print(f"TensorFlow is absent: TensorBoard gets the per-epoch scalars in {log_dir} "
              "(no per-pair diversity or attention image).")
        return [EpochScalars(log_dir)]
    print("TensorFlow and the tensorboard package are absent: no TensorBoard logs "
          "(history.json has every logged value; `pip install tensorboard` adds the logs).")
    return []
