"""The files of a run's checkpoints folder, read without Keras: which epoch a run resumes from.

`rundir.py` writes them (see its docstring for the order); this module answers, from the files
alone, how many epochs the run in a folder has saved and whether its last.keras is the file
state.json records. It imports no framework, so `okddip reproduce` can say where a cell resumes
before it starts the cell's `okddip train`.
"""

import hashlib
import json
import os
import zipfile
import zlib

from okddip_tf import atomic_files
from okddip_tf.errors import InputError, MissingInputError

LAST_CHECKPOINT = "last.keras"
PREVIOUS_CHECKPOINT = "previous.keras"
BEST_CHECKPOINT = "best.keras"
STATE = "state.json"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_problem(path):
    """Why the file at `path` cannot be a .keras checkpoint, or None when it reads as one."""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in ("config.json", "model.weights.h5")
                       if name not in archive.namelist()]
            if missing:
                return f"is a zip archive but not a Keras model (it lacks {' and '.join(missing)})"
            damaged = archive.testzip()
            if damaged is not None:
                return f"is damaged: its member {damaged} fails its CRC check"
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, zlib.error, EOFError):
        return "is truncated or not a zip archive (a .keras checkpoint is one)"
    except ValueError:
        return "is a zip archive but not a Keras model (its config.json is not JSON)"
    return None


def fallback_advice(directory, state):
    """How to go on from previous.keras, checked against the hash state.json records for it."""
    previous = state.get("previous") or {}
    path = os.path.join(directory, PREVIOUS_CHECKPOINT)
    last = os.path.join(directory, LAST_CHECKPOINT)
    sha = file_sha256(path) if os.path.exists(path) else None
    if sha is not None and sha == state.get("checkpoint_sha256"):
        # Kept just before a save that a kill interrupted: it is the recorded last.keras itself.
        return (f" {path} is an intact copy of it: `cp {path} {last}` and run the same command "
                "again to resume where the run stopped.")
    if sha is None or sha != previous.get("checkpoint_sha256"):
        return (f" There is no intact previous checkpoint to fall back to ({path} is "
                f"{'missing' if sha is None else 'not the file state.json records'}).")
    return (f" Or resume from the previous checkpoint, after {previous['epochs_done']} epoch(s), "
            f"whose SHA-256 matches its record: `cp {path} {last}` and run the same command "
            f"again (it trains epoch {previous['epochs_done'] + 1} on again).")


def checkpoint_epochs(directory):
    """(epochs finished, SHA-256) of `<directory>/last.keras`; (0, None) when a run has none.

    state.json records the last checkpoint it saw written and the previous one. A last.keras
    that is neither, and reads as a checkpoint, was saved for the next epoch just before a kill
    (history.json was written before it). One that cannot be read was damaged after it was
    written: an InputError names it, with its hash against the recorded one.
    """
    state = atomic_files.read_json(os.path.join(directory, STATE), {"epochs_done": 0})
    done, path = state["epochs_done"], os.path.join(directory, LAST_CHECKPOINT)
    if not os.path.exists(path):
        if done:
            raise MissingInputError(
                f"{directory}/{STATE} records {done} finished epochs, but {path} is missing. "
                "Restore it from a copy, or start over with a new --workdir or "
                "--config.train.resume=False." + fallback_advice(directory, state))
        return 0, None
    sha = file_sha256(path)
    if sha == state.get("checkpoint_sha256"):
        return done, sha
    previous = state.get("previous") or {}
    if sha == previous.get("checkpoint_sha256"):
        return previous["epochs_done"], sha  # previous.keras copied over last.keras
    problem = checkpoint_problem(path)
    if problem:
        recorded = state.get("checkpoint_sha256")
        raise InputError(
            f"The checkpoint {path} cannot be read: it {problem}. Its SHA-256 is {sha}, but "
            + (f"{directory}/{STATE} records {recorded} for it (after {done} epoch(s)), so it "
               "was damaged after the run wrote it; history.json and the rest of the run are "
               "intact. Restore the file from a copy (its SHA-256 must be that recorded one) "
               "and run the same command again to resume." if recorded else
               f"{directory}/{STATE} records no checkpoint: no epoch finished saving, so "
               "starting over (--config.train.resume=False) loses nothing.")
            + fallback_advice(directory, state))
    return done + 1, sha
