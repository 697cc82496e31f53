"""Runs that survive a kill: per-epoch checkpoints of the whole group, and resuming from them.

After every epoch a run writes, in this order and each atomically (beside, then renamed):
  history.json                 every logged value, per epoch
  checkpoints/previous.keras   the checkpoint before the new one (a hard link where possible)
  checkpoints/last.keras       the group: weights, optimizer variables and iteration count
  checkpoints/best.keras       on an epoch whose monitored test accuracy is the best so far (the
                               method's reported one, val_<reported>): a copy of last.keras
  checkpoints/state.json       {"epochs_done": n, "checkpoint_sha256": <hash of that last.keras>,
                                "previous": {"epochs_done": n - 1, "checkpoint_sha256": ...},
                                "best": {"epochs_done": e, "monitor": ..., "value": ...,
                                         "checkpoint_sha256": ...}}
A kill at any moment leaves a consistent run. `read_progress` takes state.json's n, plus one when
last.keras is not the file state.json describes (saved for epoch n + 1 just before a kill), and
cuts history.json to that many epochs. A last.keras that differs from its record and cannot be
read (truncated, not a zip, not a Keras model) was damaged after it was written: that is reported
with both hashes, and previous.keras lets the run go on from the epoch before. best.keras is
selected on the evaluation split, the test split in the paper's protocol (what the authors' KD
loads as its teacher, `kd.teacher_checkpoint="best"`); workdirs written before it existed have
no best.keras and no "best" record, and read as before. Ramp-up and
learning rate follow from the epoch and the optimizer's iteration count, and the training data of
epoch e depends only on (seed, e).
"""

import json
import os
import tempfile
import time
import warnings

import keras
import numpy as np

from okddip_tf import atomic_files, methods, models
from okddip_tf.checkpoint_files import (BEST_CHECKPOINT, LAST_CHECKPOINT, PREVIOUS_CHECKPOINT,
                                     STATE, checkpoint_epochs, file_sha256)
from okddip_tf.callbacks import non_finite_losses
from okddip_tf.config import authors_dropout, get_base_config
from okddip_tf.errors import InputError

# Keys a resumed run may change: none changes what the finished epochs computed.
RESUMABLE_CHANGES = ("train.epochs", "train.verbose", "train.resume", "data.data_dir",
                     "data.download")
# What a run writes into its workdir: `train.resume=False` moves these aside.
RUN_ENTRIES = ("config.json", "dataset_info.json", "history.json", "metrics.json",
               "timing.json", "checkpoints", "tensorboard")
TIMING = "timing.json"
LOG_MARGIN_BYTES = 16 * 2**20  # history, metrics, TensorBoard events


class GroupCheckpoint(keras.callbacks.Callback):
    """Saves the group to `<directory>/last.keras` after every epoch, then `state.json`.

    The checkpoint it replaces is kept as `previous.keras`, recorded in state.json with its own
    hash. With `monitor` (a logged value, e.g. "val_leader_accuracy"), an epoch whose value is
    higher than every earlier epoch's is also kept as `best.keras` (the first of equal values, as
    metrics.json's best epoch; the authors' train.py:223 takes the last), recorded in state.json
    under "best" with its epoch and value. Every write is atomic: a crash mid-save leaves the
    previous checkpoint intact. An epoch whose logged losses are NaN or infinite is not saved (a
    NaNGuard before it stops the run).
    """

    def __init__(self, directory, monitor=None):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.saved = None  # (epochs, SHA-256) of the last.keras this callback wrote
        self.best = best_record(directory)  # a resumed run goes on from its recorded best

    @property
    def path(self):
        return os.path.join(self.directory, LAST_CHECKPOINT)

    def on_epoch_end(self, epoch, logs=None):
        bad = non_finite_losses(logs)
        if bad:
            warnings.warn(f"Not saving epoch {epoch + 1}: its {sorted(bad)} are not finite. "
                          f"{self.path} keeps the last good epoch.")
            return
        previous = self.keep_previous()
        atomic_files.save_model(self.model, self.path)
        self.saved = (epoch + 1, file_sha256(self.path))
        state = {"epochs_done": epoch + 1, "checkpoint": LAST_CHECKPOINT,
                 "checkpoint_sha256": self.saved[1]}
        if previous:
            state["previous"] = previous
        self.keep_best(epoch, logs or {})
        if self.best:
            state["best"] = self.best
        atomic_files.write_json(os.path.join(self.directory, STATE), state)

    def keep_best(self, epoch, logs):
        """Copies last.keras to best.keras when the monitored value beats every earlier epoch."""
        if self.best and self.best["epochs_done"] > epoch:
            self.best = None  # recorded for an epoch this (resumed) run trains again
        value = logs.get(self.monitor) if self.monitor else None
        if value is None or not np.isfinite(float(value)):
            return
        if self.best and self.best.get("monitor") == self.monitor \
                and float(value) <= self.best["value"]:
            return
        atomic_files.keep_copy(self.path, os.path.join(self.directory, BEST_CHECKPOINT))
        self.best = {"checkpoint": BEST_CHECKPOINT, "epochs_done": epoch + 1,
                     "monitor": self.monitor, "value": float(value),
                     "checkpoint_sha256": self.saved[1]}

    def keep_previous(self):
        """Keeps the current last.keras as previous.keras; returns its record (None: none)."""
        if not os.path.exists(self.path):
            return None
        epochs, sha = self.saved or checkpoint_epochs(self.directory)
        atomic_files.keep_copy(self.path, os.path.join(self.directory, PREVIOUS_CHECKPOINT))
        return {"checkpoint": PREVIOUS_CHECKPOINT, "epochs_done": epochs,
                "checkpoint_sha256": sha}


def best_record(directory):
    """state.json's record of best.keras ({"epochs_done", "monitor", "value", ...}), or None
    (no run, or one written before best.keras existed)."""
    return atomic_files.read_json(os.path.join(directory, STATE), {}).get("best")


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.json` current after every epoch, so a killed run still shows its curves.

    Args:
      path: the JSON file.
      history: the history of the epochs before (a resumed run), {key: [value per epoch]}.
    """

    def __init__(self, path, history=None):
        super().__init__()
        self.path = path
        self.history = {key: list(values) for key, values in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        atomic_files.write_json(self.path, self.history)


class EpochTimer(keras.callbacks.Callback):
    """Keeps `timing.json` ({"epoch_seconds": [wall seconds of each epoch]}) current.

    An epoch's time runs from its first training step to the end of its evaluation (the first
    epoch also fills the data cache). A resumed run keeps the times of the epochs its checkpoint
    holds and times the ones it trains again.
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = path
        saved = atomic_files.read_json(path, {}).get("epoch_seconds", [])[:initial_epoch]
        # Epochs trained before timing.json existed are unknown (null).
        self.seconds = saved + [None] * (initial_epoch - len(saved))
        self.start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        del self.seconds[epoch:]
        self.seconds.append(time.perf_counter() - self.start)
        atomic_files.write_json(self.path, {"epoch_seconds": self.seconds})


def holds_run(workdir):
    return any(os.path.exists(os.path.join(workdir, name))
               for name in ("config.json", "history.json", os.path.join("checkpoints", STATE),
                            os.path.join("checkpoints", LAST_CHECKPOINT)))


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Config keys that moved: a run saved before the move compares under the new key.
MOVED_KEYS = {f"model.{key}": f"okddip.{key}"
              for key in ("attention_dim", "attention_scale", "detach_targets", "target_space")}


def upgrade_saved(saved):
    """A saved (flat) config in today's keys; keys added since take their defaults.

    New keys are added with defaults that keep what older runs did, so a run saved before a key
    existed ran as its default says.
    """
    saved = {MOVED_KEYS.get(key, key): value for key, value in saved.items()}
    if "model.dropout" not in saved and has_dropout(saved.get("model.backbone")):
        saved["model.dropout"] = 0.5  # before the key, vgg16 always trained with 0.5
    defaults = flatten(json.loads(json.dumps(get_base_config().to_dict(), default=float)))
    return {**defaults, **saved}


def has_dropout(backbone):
    return isinstance(backbone, str) and "dropout" in models.backbone_options(backbone)


def resolve_dropout(flat):
    """A flat config with model.dropout=None (auto) replaced by the value it trains with."""
    if flat.get("model.dropout") is None and has_dropout(flat.get("model.backbone")):
        return {**flat, "model.dropout": authors_dropout(flat.get("model.sharing"),
                                                        flat.get("model.num_students"))}
    return flat


def config_differences(saved, config):
    """The keys (outside RESUMABLE_CHANGES) where `config` differs from a saved config dict.

    Only the sections a run reads count: not `tuner` (`okddip tune` reads it), nor the option
    sections of methods other than the run's.
    """
    current = resolve_dropout(flatten(json.loads(json.dumps(config.to_dict(), default=float))))
    saved = resolve_dropout(upgrade_saved(flatten(saved)))
    unread = set(methods.config_sections()) - set(methods.get_spec(config.model.method).sections)
    unread.add("tuner")
    keys = {key for key in saved.keys() | current.keys()
            if key not in RESUMABLE_CHANGES and key.split(".")[0] not in unread}
    return {key: (saved.get(key, "<absent>"), current.get(key, "<absent>"))
            for key in sorted(keys) if saved.get(key, "<absent>") != current.get(key, "<absent>")}


def check_same_config(workdir, config):
    saved = atomic_files.read_json(os.path.join(workdir, "config.json"), {})
    differences = config_differences(saved, config)
    if differences:
        listed = "; ".join(f"{key}: {old!r} there, {new!r} now"
                           for key, (old, new) in list(differences.items())[:8])
        raise InputError(
            f"{workdir} holds a run with a different config ({listed}), so it cannot be resumed. "
            "Use a new --workdir, or --config.train.resume=False to start over there (the old "
            "run is then moved into a replaced-* folder inside the workdir, not deleted).")


def set_aside(workdir):
    """Moves the run in `workdir` into a new `<workdir>/replaced-<time>-*` folder; returns it."""
    target = tempfile.mkdtemp(dir=workdir, prefix=time.strftime("replaced-%Y%m%d-%H%M%S-"))
    for name in RUN_ENTRIES:
        if os.path.exists(os.path.join(workdir, name)):
            os.rename(os.path.join(workdir, name), os.path.join(target, name))
    return target


def read_progress(workdir):
    """(epochs done, their history) of the run in `workdir`, consistent after a kill anywhere."""
    done, _ = checkpoint_epochs(os.path.join(workdir, "checkpoints"))
    history = atomic_files.read_json(os.path.join(workdir, "history.json"), {})
    if done and (not history or min(len(values) for values in history.values()) < done):
        raise InputError(f"{workdir}/history.json holds fewer than the {done} epochs of its "
                         "checkpoint: the run cannot be resumed exactly. Start over with a new "
                         "--workdir or --config.train.resume=False.")
    return done, {key: values[:done] for key, values in history.items()}


def prepare_run(workdir, config, chief=True):
    """Checks `workdir` before anything runs: (first epoch to train, history so far).

    A workdir holding a run with the same config (up to RESUMABLE_CHANGES) is resumed;
    a different config fails; `train.resume=False` moves an existing run aside and starts over.
    A non-chief multi-worker task (`chief=False`) changes nothing there: it reads the chief's
    progress, which needs the workdir on storage the workers share.
    """
    if not chief:
        if not (config.train.resume and holds_run(workdir)):
            return 0, {}
        check_same_config(workdir, config)
        return read_progress(workdir)
    atomic_files.check_writable(workdir)
    if holds_run(workdir) and not config.train.resume:
        print(f"train.resume=False: moved the run in {workdir} to {set_aside(workdir)}.")
    elif holds_run(workdir):
        check_same_config(workdir, config)
    directory = os.path.join(workdir, "checkpoints")
    atomic_files.check_writable(directory)
    atomic_files.remove_leftovers(directory)
    atomic_files.remove_leftovers(workdir)
    return read_progress(workdir)


def checkpoint_bytes(group):
    """The bytes of the group's weights plus its optimizer's variables: a checkpoint's size."""
    variables = list(group.weights) + list(getattr(group.optimizer, "variables", []))
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def check_disk_space(workdir, group):
    """Fails before training when a checkpoint could not be written beside the last one."""
    size = checkpoint_bytes(group)
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)  # a new worker's temp dir
    atomic_files.check_free_space(
        os.path.join(workdir, "checkpoints"), 4 * size + LOG_MARGIN_BYTES,
        f"checkpointing this {size / 2**20:.1f} MiB group (each new checkpoint is written "
        "beside the last, the previous and the best one, plus logs)")


def restore(group, workdir):
    """Loads the last checkpoint into a compiled group: weights, optimizer variables, step."""
    if not group.optimizer.built:
        group.optimizer.build(group.trainable_variables)
    group.load_weights(os.path.join(workdir, "checkpoints", LAST_CHECKPOINT))


def describe_last(workdir):
    """A sentence on the checkpoint a failed run leaves behind."""
    done, _ = read_progress(workdir)
    if not done:
        return "No epoch finished, so no checkpoint was saved."
    path = os.path.join(workdir, "checkpoints", LAST_CHECKPOINT)
    return f"The last good checkpoint, after {done} finished epoch(s), is kept at {path}."
