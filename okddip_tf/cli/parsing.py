"""The command line, checked before anything is imported: the command, its flags (only its own and
the shared ones), the config and its overrides; a mistake is a one-line usage or config error."""

import difflib
import os
import re
import sys
import traceback

from absl import flags

from okddip_tf import errors
from okddip_tf.cli.declarations import COMMANDS, SHARED, flag_values


def find_command(argv):
    """The first argument naming a command, else None."""
    return next((arg for arg in argv[1:] if arg in COMMANDS), None)


def wants(argv, flag, env):
    """Whether a bool flag is on, read from argv before absl parses it (or from `env`)."""
    value = os.environ.get(env, "") not in ("", "0", "false", "False")
    for arg in argv[1:]:
        if arg in (f"--{flag}", f"-{flag}", f"--{flag}=true", f"--{flag}=1"):
            value = True
        elif arg in (f"--no{flag}", f"-no{flag}", f"--{flag}=false", f"--{flag}=0"):
            value = False
    return value


def command_of(argv):
    """The command `argv` names; a usage error for none or an unknown one."""
    command = find_command(argv)
    if command is not None:
        return command
    words = [arg for arg in argv[1:] if not arg.startswith("-")]
    close = difflib.get_close_matches(words[0], COMMANDS, n=1) if words else []
    raise errors.UsageError(
        f"expected one command of {', '.join(COMMANDS)}" +
        (f", got {' '.join(argv[1:])!r}" if argv[1:] else "") +
        (f" (did you mean `okddip {close[0]}`?)" if close else "") +
        ". Run `okddip --help` for what each does.")


def flag_name(arg):
    """--name=value, -name, --noname -> (name as written without dashes or value, has '=')."""
    name, equals, _ = arg.lstrip("-").partition("=")
    return name, bool(equals)


def owned(command, name):
    """The Flag of `command` that `name` (maybe 'no' + a bool flag's name) sets, else None."""
    flag = command.flag(name)
    if flag is None and name.startswith("no"):
        flag = command.flag(name[2:])
        flag = flag if flag is not None and not flag.takes_value else None
    return flag


def not_a_flag_of(name, command_name):
    """The usage error for --name given to `command_name`, which has no such flag."""
    command = COMMANDS[command_name]
    more = f"Run `okddip {command_name} --help` for its flags."
    if name.startswith("config."):
        return errors.UsageError(
            f"--{name.split('=')[0]} overrides a config key, and {command_name} takes no config "
            "(only `okddip train` and `okddip tune` do). " + more)
    owners = [other for other, each in COMMANDS.items()
              if other != command_name and owned(each, name) is not None]
    if owners:
        flag = owned(COMMANDS[owners[0]], name)
        where = " and ".join(f"`okddip {owner}`" for owner in owners)
        hint = (f"; {flag.in_config.format(command=command_name)}."
                if flag.in_config and command.has_config else f". {more}")
        return errors.UsageError(f"--{name} is a flag of {where}{hint}")
    close = difflib.get_close_matches(name, [flag.name for flag in command.flags + SHARED], n=1)
    return errors.UsageError(f"unknown flag --{name}" + (
        f"; did you mean --{close[0]}?" if close else f". {more}"))


def check_arguments(command_name, argv):
    """Checks that argv holds only `command_name`'s flags (and the shared ones) and the ones it
    needs; returns (the other flags, the config and its overrides), each with its value.

    Nothing here imports more than absl: a wrong command line answers before TensorFlow starts.
    """
    command = COMMANDS[command_name]
    given, config_args, other_args = set(), [], []
    args, seen_command = list(argv[1:]), False
    while args:
        arg = args.pop(0)
        if arg == command_name and not seen_command:
            seen_command = True
            continue
        if arg == "--" or not arg.startswith("-") or arg == "-":
            raise errors.UsageError(f"unexpected argument {arg!r}; {command_name} takes flags "
                                    f"only. Run `okddip {command_name} --help` for them.")
        name, has_value = flag_name(arg)
        if name.startswith("config.") and command.has_config:
            # ml_collections checks the key against the config. Without "=", a word after the
            # key is its value (a bool key may stand alone); it is passed on as KEY=VALUE.
            if not has_value and args and not args[0].startswith("-") and args[0] != command_name:
                arg = f"{arg}={args.pop(0)}"
            config_args.append(arg)
            continue
        flag = owned(command, name)
        if flag is None:
            raise not_a_flag_of(name, command_name)
        group = [arg]
        if flag.takes_value and not has_value:  # --flag VALUE
            if not args:
                raise errors.UsageError(f"--{name} needs a value: {flag.usage}.")
            group.append(args.pop(0))
        given.add(flag.name)
        (config_args if flag.kind == "config" else other_args).extend(group)
    required = [flag for flag in command.flags if flag.required]
    missing = [flag for flag in required if flag.name not in given]
    if missing:
        raise errors.UsageError(
            f"needs {' and '.join(flag.usage for flag in required)}; missing: "
            f"{', '.join('--' + flag.name for flag in missing)}.")
    if command.one_of and not given.intersection(command.one_of):
        raise errors.UsageError("needs " + " or ".join(
            f"{command.flag(name).usage}" for name in command.one_of) + ".")
    # Apart: loading the config is slow (and imports Keras until config.py stops doing so), so
    # every other flag's value is checked first.
    return other_args, config_args


def config_key_error(error, argv):
    """A ConfigError for ml_collections' error on a --config.<key> the config lacks, else None.

    Only an error raised while ml_collections resolves an override's path qualifies.
    """
    frames = traceback.extract_tb(error.__traceback__)
    if not any(frame.filename.endswith(os.path.join("config_flags", "config_path.py"))
               for frame in frames):
        return None
    cause = error
    while cause.args and isinstance(cause.args[0], BaseException):  # AttributeError(KeyError(...))
        cause = cause.args[0]
    text = cause.args[0] if cause.args and isinstance(cause.args[0], str) else str(cause)
    key, _, hint = text.partition("\n")
    key = key.strip("'\"")
    paths = [arg.split("=")[0].lstrip("-") for arg in argv[1:] if arg.startswith("--config.")]
    path = next((p for p in paths if key in p.split(".")), None)
    where = f"--{path}" if path else f"--config.<...>.{key}"
    return errors.ConfigError(f"{where}: the config has no such key. {hint}".strip() +
                              " Every key and its default: okddip_tf/config.py.")


def bad_value(command, message):
    """absl's message on a flag's bad value, as what the flag takes."""
    match = re.match(r"flag --(\w+)=(.*?): ", message)
    flag = COMMANDS[command].flag(match.group(1)) if match else None
    takes = {"integer": "a whole number", "float": "a number",
             "bool": "true or false"}.get(getattr(flag, "kind", ""))
    if not takes:
        return message
    return f"--{flag.name}={match.group(2)}: {flag.usage} takes {takes}."


def parse_flags(command, argv, verbose):
    """The command's parsed FlagValues; every error in argv is a usage error (no traceback)."""
    values = flag_values(command)
    try:
        argv = values.read_flags_from_files(argv, force_gnu=False)  # --flagfile=FILE
    except flags.Error as error:
        raise errors.UsageError(str(error)) from None
    others, config_args = check_arguments(command, argv)
    try:
        try:
            values([argv[0], *others])
        except flags.IllegalFlagValueError as error:
            raise errors.UsageError(bad_value(command, str(error))) from None
        if config_args:  # a config file is plain data: loading it starts no framework
            config_args, unset = none_overrides(config_args)
            values([argv[0], *config_args])
            for key in unset:
                unset_key(values.config, key)
    except flags.Error as error:
        message = str(error)
        if "Error whilst parsing config file" in message:  # ml_collections' text of a traceback
            if verbose:
                print(message, file=sys.stderr)
            last = re.sub(r"^[\w.]*(Error|Exception): ", "", message.strip().splitlines()[-1])
            message = f"{message.split(': Error whilst parsing config file')[0]}: {last}"
        raise errors.UsageError(message) from None
    except (AttributeError, KeyError) as error:
        converted = config_key_error(error, argv) or missing_get_config(error, argv)
        if converted is None:
            raise
        raise converted from None
    return values


def none_overrides(config_args):
    """(the other config arguments, the keys given as None): `--config.KEY=None` (or `none`)
    unsets a key, which ml_collections would parse as a value of the key's type.

    `check_arguments` has written every override with a value as one KEY=VALUE argument.
    """
    kept, unset = [], []
    for arg in config_args:
        key, _, value = arg.partition("=")
        if key.startswith("--config.") and value.lower() == "none":
            unset.append(key[len("--config."):])
        else:
            kept.append(arg)
    return kept, unset


def unset_key(config, key):
    """Sets `key` ("data.train_examples") of the loaded config to None, where its default is
    None (an optional setting); other keys need a value."""
    from okddip_tf import config as config_module  # pylint: disable=import-outside-toplevel

    *parents, name = key.split(".")
    section, default = config, config_module.get_base_config()
    for depth, part in enumerate([*parents, name]):
        if part not in section or part not in default:
            raise errors.ConfigError(f"--config.{key}: the config has no such key. Every key "
                                     "and its default: okddip_tf/config.py.")
        if depth < len(parents):
            section, default = section[part], default[part]
    if default[name] is not None:
        raise errors.UsageError(f"--config.{key}=None: {key} needs a value (default "
                                f"{default[name]!r}); None unsets only the keys whose default "
                                "is None, e.g. data.train_examples.")
    section[name] = None


def missing_get_config(error, argv):
    """A UsageError for a --config file that defines no get_config (ml_collections fails on
    `module.get_config` with an AttributeError), else None."""
    if not (isinstance(error, AttributeError) and getattr(error, "name", None) == "get_config"):
        return None
    config = next((arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")), "")
    return errors.UsageError(
        f"--config={config}: the file defines no get_config(arg=None), the function that returns "
        "the config; pass one of configs/ (e.g. configs/quickstart.py), or write get_config in "
        "yours, starting from okddip_tf.config.get_base_config().")


def fail(command, error, verbose):
    """Ends the command on a user error: its message on one line (and traceback when verbose)."""
    if verbose:
        traceback.print_exception(error)
    where = f"okddip {command}" if command else "okddip"
    message = " ".join((str(error).strip() or type(error).__name__).split("\n"))
    if isinstance(error, errors.UsageError) and "--help" not in message:
        message += ("" if message.endswith((".", "?")) else ".") + \
            f" Run `{where} --help` for its flags."
    print(f"{where}: {message}", file=sys.stderr)
    sys.exit(error.exit_code)
