"""TensorBoard logging that works with and without TensorFlow installed.

`EpochScalars` writes the per-epoch scalars (`train/` and `validation/`, tags `epoch_<key>`, each
once per split; the distillation weight and the learning rate under `train/` only) with the
`tensorboard` package's TensorFlow-free event writer, so a JAX-only machine gets the same logs.
Keras' TensorBoard callback is not used: it logs every validation value twice (`epoch_*` and
`evaluation_*_vs_iterations`) and the training-only values as validation ones. Without the
`tensorboard` package TensorBoard logging is skipped with one line saying so. Logging never stops a
run.
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


# Values that describe training, not a model's predictions: logged under train/ only (the
# group's trackers log distill_weight in evaluation too, where it says nothing new).
TRAIN_ONLY = ("distill_weight", "learning_rate")


def learning_rate(model):
    """The optimizer's learning rate now (for its next step), or None without one."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under loss scaling
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochScalars(keras.callbacks.Callback):
    """Writes every epoch's logged scalars as TensorBoard events, each once per split.

    `train/` gets the training values and the learning rate the epoch trained with; `validation/`
    the `val_` values, except TRAIN_ONLY ones. Tags are `epoch_<key>`, steps the epochs numbered
    from 1 as Keras prints them. It needs the `tensorboard` package, not TensorFlow.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}
        self.rate = None

    def writer(self, name):
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if name not in self.writers:
            self.writers[name] = EventFileWriter(os.path.join(self.log_dir, name))
        return self.writers[name]

    def on_epoch_begin(self, epoch, logs=None):
        self.rate = learning_rate(self.model)  # a schedule's value for this epoch's first step

    def on_epoch_end(self, epoch, logs=None):
        # pylint: disable-next=import-outside-toplevel
        from tensorboard.compat.proto import event_pb2, summary_pb2

        logs = dict(logs or {})
        if self.rate is not None and "learning_rate" not in logs:
            logs["learning_rate"] = self.rate
        values = {"train": [], "validation": []}
        for key, value in logs.items():
            split, key = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if split == "validation" and key in TRAIN_ONLY:
                continue
            values[split].append(summary_pb2.Summary.Value(tag=f"epoch_{key}",
                                                           simple_value=float(value)))
        for split, split_values in values.items():
            if split_values:
                self.writer(split).add_event(event_pb2.Event(
                    wall_time=time.time(), step=epoch + 1,
                    summary=summary_pb2.Summary(value=split_values)))
                self.writer(split).flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard_callbacks(log_dir):
    """The callbacks writing TensorBoard logs into `log_dir` in this environment (maybe none)."""
    if tensorboard_writer_available():
        if not tensorflow_available():
            print(f"TensorFlow is absent: TensorBoard gets the per-epoch scalars in {log_dir} "
                  "(no per-pair diversity or attention).")
        return [EpochScalars(log_dir)]
    print("The tensorboard package is absent: no TensorBoard logs (history.json has every "
          "logged value; `pip install tensorboard` adds the logs).")
    return []
