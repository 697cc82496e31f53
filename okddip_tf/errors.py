"""Errors a user can fix: `okddip` prints their message, without a traceback.

Every class here is also the built-in exception that the same check raised before (ValueError,
FileNotFoundError, ...), so code catching those keeps working. Raise one where the input that is
wrong came from the user (a config value, a path, a file, an argument), with a message that says
what was wrong and how to fix it. Anything else that goes wrong is a bug and keeps its traceback.

`exit_code` is the status `okddip` exits with: 2 for a wrong command line or config (usage),
1 for inputs the command could not use (data, workdir, checkpoint, missing packages).
"""

USAGE, FAILURE = 2, 1


class UserError(Exception):
    """Base class: wrong input, reported as one message by the command line."""

    exit_code = FAILURE


class UsageError(UserError, ValueError):
    """Wrong command-line arguments: unknown command, missing or conflicting flags."""

    exit_code = USAGE


class ConfigError(UserError, ValueError):
    """A config key or value that cannot work: out of range, unknown name, wrong combination."""

    exit_code = USAGE


class InputError(UserError, ValueError):
    """A file or dataset the user pointed at has content the command cannot use."""


class MissingInputError(UserError, FileNotFoundError):
    """A dataset, workdir, checkpoint or file the command needs is not there."""


class ExistsError(UserError, FileExistsError):
    """The command would replace something the user did not ask to replace."""


class WorkdirError(UserError, PermissionError):
    """A directory the command must write into is not writable."""


class StorageError(UserError, OSError):
    """Not enough free space (or a similar limit of the file system) for what is written."""


class DependencyError(UserError, ImportError):
    """An optional package a chosen setting needs is not installed."""


class TrainingFailed(UserError, RuntimeError):
    """Trainings the command ran (each with its own log) did not finish; the message says where."""
