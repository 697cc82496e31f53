"""Writes that are never left half-done: write beside the target, then rename into place."""

import errno
import json
import os
import shutil
import tempfile

from okddip_tf.errors import StorageError, WorkdirError

# The names of in-progress writes: never a finished file.
TEMPORARY_PREFIXES = (".tmp-", ".partial-", ".probe-")


def read_json(path, default=None):
    """The JSON value in `path`, or `default` when there is no such file."""
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def write_text(path, text):
    """Writes `text` to `path` atomically: a temporary file beside it, synced, then renamed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_model(model, path):
    """`model.save(path)` (a .keras file) through a temporary file renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".partial-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def keep_copy(source, path):
    """Makes `path` a copy of the file `source`, atomically: a hard link to it where the file
    system allows (no bytes copied: a later atomic replace of `source` leaves `path` as it was),
    else a copy; either is made beside `path`, synced, then renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".partial-{os.getpid()}-{os.path.basename(path)}")
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_leftovers(directory):
    """Deletes the temporary files that writes killed mid-way left in `directory`; returns them.

    Folders are left alone: `replace_directory` of another command may be building one.
    """
    if not os.path.isdir(directory):
        return []
    leftovers = [name for name in sorted(os.listdir(directory))
                 if name.startswith(TEMPORARY_PREFIXES)
                 and os.path.isfile(os.path.join(directory, name))]
    for name in leftovers:
        os.remove(os.path.join(directory, name))
    return leftovers


def replace_directory(build, path):
    """Calls `build(tmp_dir)` on a fresh sibling directory, then renames it to `path`.

    `path` must not exist yet; a failure leaves nothing behind.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".partial-{os.path.basename(path)}-")
    try:
        build(tmp)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(directory):
    """Creates `directory` if needed and proves it writable with a probe file, or fails clearly."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise WorkdirError(
            f"Cannot write to {directory} ({err.strerror or err}): the run could not save "
            "checkpoints there. Choose a writable --workdir, or fix its permissions."
        ) from err


def check_free_space(directory, needed_bytes, what):
    """Fails clearly when the file system of `directory` has fewer than `needed_bytes` free."""
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise StorageError(
            errno.ENOSPC,
            f"{directory} has {free / 2**20:.1f} MiB free, but {what} needs about "
            f"{needed_bytes / 2**20:.1f} MiB. Free some space or choose another --workdir.",
        )
