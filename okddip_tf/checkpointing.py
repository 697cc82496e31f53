"""Checkpoints of the whole group (weights, optimizer, ramp-up state) as .keras files."""

import os

import keras

from okddip_tf import io_utils

LAST_CHECKPOINT = "last.keras"


class GroupCheckpoint(keras.callbacks.Callback):
    """Saves the group to `<directory>/last.keras` after every epoch, atomically.

    A crash mid-save leaves the previous checkpoint intact (the file is renamed into place).
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    @property
    def path(self):
        return os.path.join(self.directory, LAST_CHECKPOINT)

    def on_epoch_end(self, epoch, logs=None):
        io_utils.save_model(self.model, self.path)


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.json` current after every epoch, so a killed run still shows its curves."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        io_utils.write_json(self.path, self.history)
