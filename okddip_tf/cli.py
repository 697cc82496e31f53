"""The `okddip` command: train, export and tune OKDDip groups, and reproduce the paper's tables.

    okddip train --config=FILE --workdir=DIR [--config.model.temperature=4 ...]
    okddip export --workdir=DIR [--checkpoint=PATH] [--export_dir=DIR] [--overwrite]
    okddip tune --config=FILE --workdir=DIR [--config.tuner.max_trials=20 ...]
    okddip reproduce --experiment=table2 --workdir=DIR [--epochs=60 --seeds=2 --only=resnet32]

Each command's flags are declared once, in COMMANDS (a `Flag` each: name, default, help, metavar);
the command's absl FlagValues and its `okddip <command> --help` are both made from them. A command
accepts only its own flags and the shared ones (--verbose, --tf_logs): a flag of another command,
or an unknown one, is a usage error naming the command it belongs to or the closest flag of this
one. Config overrides use ml_collections' syntax on a locked config, so a mistyped key fails.

A wrong command line (unknown command or flag, missing flag, bad value) is reported before
TensorFlow or Keras is imported. A wrong input (okddip_tf.errors.UserError) ends the command with
its message on one line and no traceback (`--verbose` or OKDDIP_VERBOSE=1 shows it); anything else
is a bug and keeps its traceback. TensorFlow's start-up log lines are hidden unless `--tf_logs` or
OKDDIP_TF_LOGS=1 (see okddip_tf/quiet.py).

Ctrl-C (SIGINT) and SIGTERM stop a command with one line saying where it stopped and how to go on,
and exit status 130 or 143 (128 + the signal's number). The signal is raised where the command is,
as Python raises KeyboardInterrupt (`Interrupted` is one); every file a run writes is written
aside and renamed, so nothing is left half-written, and `okddip reproduce` passes the signal on to
its `okddip train` children and waits for them (okddip_tf/reproduce/runner.py).
"""

import dataclasses
import difflib
import functools
import os
import re
import signal
import sys
import textwrap
import traceback

from absl import flags, logging
from ml_collections import config_flags

from okddip_tf import errors, quiet

ENV_VERBOSE = "OKDDIP_VERBOSE"
HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
HELPFULL_ARGS = ("--helpfull", "-helpfull")
SIGNAL_EXIT = 128  # + the signal's number: 130 after SIGINT, 143 after SIGTERM


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a command: both its parsing (absl) and its `--help` lines are made from this."""

    name: str
    help: str
    metavar: str = ""  # how help writes the value, --name=METAVAR; a bool flag has none
    default: object = None
    kind: str = "string"  # string | integer | float | list | enum | bool | config
    choices: tuple = ()  # an enum's values
    shown_default: str = ""  # help's default where the value itself says little
    required: bool = False
    # For a command with a config (train, tune) given this flag of another command: where its
    # setting lives there ({command} is that command's name).
    in_config: str = ""

    def define(self, flag_values):
        """Defines this flag in `flag_values` (one command's absl FlagValues)."""
        if self.kind == "config":
            config_flags.DEFINE_config_file(self.name, self.default, self.help,
                                            flag_values=flag_values, lock_config=True)
        elif self.kind == "enum":
            flags.DEFINE_enum(self.name, self.default, list(self.choices), self.help,
                              flag_values=flag_values)
        else:
            define = {"string": flags.DEFINE_string, "integer": flags.DEFINE_integer,
                      "float": flags.DEFINE_float, "list": flags.DEFINE_list,
                      "bool": flags.DEFINE_bool}[self.kind]
            define(self.name, self.default, self.help, flag_values=flag_values)

    @property
    def takes_value(self):
        return self.kind != "bool"

    @property
    def usage(self):
        return f"--{self.name}={self.metavar}" if self.metavar else f"--{self.name}"

    def help_lines(self):
        """`--help`'s lines for this flag: `--name=METAVAR`, then its help and default."""
        if self.shown_default:
            default = self.shown_default
        elif self.required:
            default = "required"
        elif self.default is None:
            default = "none"
        elif isinstance(self.default, bool):
            default = str(self.default).lower()
        else:
            default = str(self.default)
        text = f"{self.help[:1].upper()}{self.help[1:]} (default: {default})"
        return [f"  {self.usage}", *textwrap.wrap(text, 92, initial_indent="      ",
                                                  subsequent_indent="      ")]


SHARED = (
    Flag("verbose", f"show the traceback of an error (or set {ENV_VERBOSE}=1).", default=False,
         kind="bool"),
    Flag("tf_logs", "show TensorFlow's start-up and C++ log lines (or set "
         f"{quiet.ENV_SHOW}=1).", default=False, kind="bool"),
)
CONFIG = Flag("config", "config file (configs/*.py[:arg]).", "FILE[:ARG]", kind="config",
              required=True)
SEED_HINT = "{command} runs the config's one seed: --config.train.seed=K"

CONFIG_HELP = """\
Config: --config=FILE[:ARG] loads FILE's get_config(ARG), e.g. configs/quickstart.py:smoke.
Override any key with --config.<section>.<key>=<value>, e.g. --config.model.temperature=4
--config.train.epochs=10 --config.optim.drop_epochs='(5, 8)'. A key the config lacks is an
error. Every key and its default: okddip_tf/config.py."""


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str
    flags: tuple  # of Flag, besides SHARED
    example: str
    about: str = ""
    one_of: tuple = ()  # flag names of which the command needs at least one

    @property
    def has_config(self):
        return any(flag.kind == "config" for flag in self.flags)

    def flag(self, name):
        """This command's (or a shared) Flag called `name`, else None."""
        return next((flag for flag in self.flags + SHARED if flag.name == name), None)

    def usage(self, name):
        needed = [flag.usage for flag in self.flags if flag.required]
        if self.one_of:
            needed.append("|".join(self.flag(each).usage for each in self.one_of))
        tail = " [--config.<section>.<key>=VALUE ...]" if self.has_config else ""
        return f"okddip {name} {' '.join(needed)} [flags]{tail}"


COMMANDS = {
    "train": Command(
        "Train a group of peers and a leader; writes checkpoints, TensorBoard logs and metrics.",
        (CONFIG, Flag("workdir", "directory for checkpoints, logs and metrics.", "DIR",
                      required=True)),
        "okddip train --config=configs/quickstart.py --workdir=runs/quickstart",
        "Running it again on the same --workdir continues the run from its last checkpoint, "
        "also after Ctrl-C."),
    "export": Command(
        "Write the trained leader as a TF Serving SavedModel, TFLite files and a report.",
        (Flag("workdir", "an `okddip train` run: its last checkpoint, data and export/.", "DIR"),
         Flag("checkpoint", "a .keras group checkpoint.", "PATH",
              shown_default="<workdir>/checkpoints/last.keras"),
         Flag("export_dir", "where to write.", "DIR", shown_default="<workdir>/export"),
         Flag("model_name", "the TF Serving model name.", "NAME", default="leader"),
         Flag("model_version", "the version to write.", "N", kind="integer",
              shown_default="the latest + 1"),
         Flag("overwrite", "replace --model_version (without one: the latest).", default=False,
              kind="bool"),
         Flag("formats", "any of saved_model,float32,float16,dynamic_int8,int8.", "LIST",
              kind="list", shown_default="all; int8 only with the run's training data"),
         Flag("eval_examples", "test images for the report's accuracy and parity; 0: none.", "N",
              kind="integer", shown_default="the run's evaluation split"),
         Flag("calibration_images", "training images calibrating int8.", "N", default=1000,
              kind="integer"),
         Flag("examples", "an .npz of the leader's inputs (`inputs`, optional `labels`) for "
              "int8 calibration and parity, instead of the run's data.", "PATH",
              shown_default="the run's data"),
         Flag("int8_calibration", "int8 activation ranges: 99.999th percentiles, or TFLite's "
              "min/max.", "percentile|minmax", default="percentile", kind="enum",
              choices=("percentile", "minmax"))),
        "okddip export --workdir=runs/quickstart",
        "Needs --workdir (an `okddip train` run) or --checkpoint.",
        one_of=("workdir", "checkpoint")),
    "tune": Command(
        "Search the config's hyperparameters with KerasTuner; writes the best trial's config.",
        (CONFIG, Flag("workdir", "directory for the trials, their logs and the best config.",
                      "DIR", required=True),
         Flag("tuner_id", "this process's part in a search on several processes: `chief` "
              "serves the trials, tuner0, tuner1, ... each train them (sets "
              "KERASTUNER_TUNER_ID).", "ID", shown_default="$KERASTUNER_TUNER_ID, else one "
              "process"),
         Flag("oracle", "the chief's address, where it listens and the workers connect (sets "
              "KERASTUNER_ORACLE_IP and _PORT).", "HOST:PORT",
              shown_default="$KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT"),
         Flag("worker_timeout", "on the chief: seconds without word from a worker before its "
              "trial goes to another worker.", "SECONDS", default=60, kind="integer")),
        "okddip tune --config=configs/cifar100_resnet32_tune.py:smoke --workdir=runs/search",
        "The search space is the config's tuner section (see okddip_tf/config.py). Running it "
        "again on the same --workdir keeps the finished trials and goes on. On several "
        "machines: one `--tuner_id=chief --oracle=HOST:PORT` and workers `--tuner_id=tuner0 "
        "--oracle=HOST:PORT`, ... with the same config and a shared --workdir (README, "
        "Hyperparameter search)."),
    "reproduce": Command(
        "Run the paper's tables and figures at a budget; reports ours beside the paper's.",
        (Flag("experiment", "the paper's table or figure (table1, table2, table3, table4, "
              "table5, table6, figure2, figure3).", "NAME", required=True),
         Flag("workdir", "directory of every cell's run, the report and figures/.", "DIR",
              required=True),
         Flag("epochs", "training epochs per cell; the paper's schedule is scaled to them.",
              "E", kind="integer", shown_default="300, the paper's; 2 with --smoke",
              in_config="{command} takes its epochs from the config: --config.train.epochs=N"),
         Flag("seeds", "runs per cell (train.seed 0, 1, ...).", "N", default=3, kind="integer",
              in_config=SEED_HINT),
         Flag("train_seeds", "train only these of the --seeds seeds (e.g. 1,2 beside a seed 0 "
              "trained before); the report reads every seed.", "K,..", kind="list",
              shown_default="every seed", in_config=SEED_HINT),
         Flag("train_examples", "train on the first N training images only.", "N",
              kind="integer", shown_default="the whole split",
              in_config="{command} takes it from the config: --config.data.train_examples=N"),
         Flag("only", "comma-separated words; only the cells whose row, column, dataset, "
              "backbone, method or run id is one of them.", "WORDS",
              shown_default="every cell"),
         Flag("parallel", "cells trained at once on this machine (one GPU each).", "N",
              default=1, kind="integer"),
         Flag("ray", "run each cell as a Ray task: on the cluster `ray start` runs here (auto), "
              "on one started on this machine (local), or on the cluster at HOST:PORT; the "
              "workdir must be shared by every worker. Needs pip install -e \".[ray]\".",
              "ADDRESS", shown_default="none: the cells run on this machine"),
         Flag("cell_cpus", "with --ray: the CPUs each cell asks Ray for.", "N", kind="float",
              shown_default="1"),
         Flag("cell_gpus", "with --ray: the GPUs each cell asks Ray for (a fraction shares a "
              "GPU).", "N", kind="float",
              shown_default="1 where the cluster has GPUs, else 0"),
         Flag("report_only", "train nothing; rebuild the report from the workdir.",
              default=False, kind="bool"),
         Flag("report_dir", "where report.md, results.json and figures/ go.", "DIR",
              shown_default="--workdir"),
         Flag("prior_results", "an earlier report's results.json of the same experiment and "
              "budget; a seed the workdir has not finished is taken from it, marked with its "
              "source.", "PATH", shown_default="none"),
         Flag("smoke", "tiny backbone and data (checks the harness; not a measurement).",
              default=False, kind="bool",
              in_config="a config's smoke size is its argument: --config=FILE:smoke")),
        "okddip reproduce --experiment=table2 --workdir=runs/table2 --epochs=60 --seeds=2 "
        "--only=resnet32",
        "Each cell trains as an `okddip train` workdir under DIR; running the same command "
        "again resumes unfinished cells and skips finished ones. DIR gets report.md, "
        "results.json and figures/. Experiments: table1, table2 (CIFAR-10/100 comparison), "
        "table3 (ImageNet ResNet-34; --epochs=90 is its paper schedule), table4 (ensembles), "
        "table5 (ablations), table6 (with a teacher), figure2 (diversity), "
        "figure3 (group size)."),
}


@functools.lru_cache(maxsize=None)
def flag_values(name):
    """The absl FlagValues of command `name`: its flags and the shared ones, and nothing else."""
    values = flags.FlagValues()
    for flag in COMMANDS[name].flags + SHARED:
        flag.define(values)
    return values


# --- help ----------------------------------------------------------------------------------------

def tool_help():
    width = max(map(len, COMMANDS))
    lines = ["okddip: Online Knowledge Distillation with Diverse Peers (OKDDip, AAAI 2020) for "
             "TensorFlow/Keras.", "", "Usage: okddip <command> [flags]", "", "Commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "Run `okddip <command> --help` for a command's flags and an example, "
              "`okddip --helpfull` for every command's.", "Read more: README.md (quickstart, "
              "configs, deploying the leader).", "", "Flags of every command:"]
    for flag in SHARED:
        lines += flag.help_lines()
    return "\n".join(lines)


def command_help(name):
    command = COMMANDS[name]
    lines = [f"okddip {name}: {command.summary}", "", f"Usage: {command.usage(name)}"]
    if command.about:
        lines += ["", textwrap.fill(command.about, 96)]
    lines += ["", "Flags:"]
    for flag in command.flags + SHARED:
        lines += flag.help_lines()
    if command.has_config:
        lines += ["", CONFIG_HELP]
    lines += ["", "Example:", f"  {command.example}"]
    return "\n".join(lines)


def full_help():
    parts = [tool_help(), *(command_help(name) for name in COMMANDS)]
    parts.append("Any command also reads flags from a file, one a line: --flagfile=FILE.")
    return f"\n\n{'=' * 96}\n\n".join(parts)


def print_help(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. `okddip --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --- the command line, checked before anything is imported ----------------------------------------

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
            # key is its value (a bool key may stand alone).
            value = [args.pop(0)] if not has_value and args and not args[0].startswith("-") \
                and args[0] != command_name else []
            config_args += [arg, *value]
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
    unsets a key, which ml_collections would parse as a value of the key's type."""
    kept, unset, args = [], [], list(config_args)
    while args:
        arg = args.pop(0)
        if "=" in arg:
            key, value = arg.split("=", 1)
        else:
            key, value = arg, args[0] if args and not args[0].startswith("-") else ""
            if value:
                args.pop(0)
        if key.startswith("--config.") and value.lower() == "none":
            unset.append(key[len("--config."):])
        else:
            kept += [arg] if "=" in arg or not value else [arg, value]
    return kept, unset


def unset_key(config, key):
    """Sets `key` ("data.train_examples") of the loaded config to None, where its default is
    None (an optional setting); other keys need a value."""
    from okddip_tf import config as config_module  # pylint: disable=import-outside-toplevel

    *parents, name = key.split(".")
    section, default = config, config_module.get_base_config()
    for part in parents:
        if part not in section or part not in default:
            raise errors.ConfigError(f"--config.{key}: the config has no such key. Every key "
                                     "and its default: okddip_tf/config.py.")
        section, default = section[part], default[part]
    if name not in section or name not in default:
        raise errors.ConfigError(f"--config.{key}: the config has no such key. Every key and "
                                 "its default: okddip_tf/config.py.")
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


# --- Ctrl-C and SIGTERM --------------------------------------------------------------------------

class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the command was, as Python raises KeyboardInterrupt."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def catch_signals():
    """Turns SIGINT and SIGTERM into `Interrupted`; a repeat (a terminal's Ctrl-C reaches
    `okddip reproduce` and its children, which it also signals) does not interrupt the stop."""
    caught = []

    def handler(signum, frame):
        del frame
        if not caught:
            caught.append(signum)
            raise Interrupted(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def epochs_kept(workdir):
    """The finished epochs a rerun resumes after, or None where that cannot be read cheaply."""
    if "keras" not in sys.modules:  # nothing trained in this sitting; don't start Keras to say it
        return None
    from okddip_tf import rundir  # pylint: disable=import-outside-toplevel

    try:
        return rundir.read_progress(workdir)[0]
    except (errors.UserError, OSError, ValueError):
        return None


def interrupted_line(command, values, interrupt):
    """One line on where `command` stopped and how to go on."""
    how = "interrupted" if interrupt.signum == signal.SIGINT else "stopped by SIGTERM"
    if command == "train":
        done = epochs_kept(values.workdir) if values is not None else None
        try:
            total = f" of {values.config.train.epochs}"
        except (AttributeError, OSError):  # no config loaded yet
            total = ""
        if done is None:
            return f"{how} before training started; rerun the same command to start or resume."
        if done == 0:
            return (f"{how} before its first epoch finished; rerun the same command to start "
                    "again.")
        return f"{how} after epoch {done}{total}; rerun the same command to resume."
    if command == "tune":
        return f"{how}; rerun the same command to continue the search (finished trials are kept)."
    if command == "reproduce":
        stopped = getattr(interrupt, "stopped", ())
        cells = (f"stopped {len(stopped)} running training(s): {'; '.join(stopped)}"
                 if stopped else "no training was running")
        return f"{how}; {cells}. Rerun the same command to resume."
    if command == "export":
        return f"{how}; nothing half-written is left: rerun the same command to export."
    return f"{how}."


# --- the commands --------------------------------------------------------------------------------

def start_logging():
    """absl logging as app.run leaves it, at WARNING: tfds logs every file it opens at INFO."""
    flags.FLAGS.mark_as_parsed()  # the global absl flags: logging reads them, nobody sets them
    logging.use_absl_handler()
    logging.set_verbosity(logging.WARNING)


def run_command(command, values):
    start_logging()
    if command == "reproduce":
        return reproduce(values)
    if command == "export":
        return export(values)
    if command == "tune":  # KerasTuner reads its distributed search's roles from the environment
        from okddip_tf import tune_cluster  # pylint: disable=import-outside-toplevel

        os.environ.update(tune_cluster.environment(values.tuner_id, values.oracle, os.environ))
        tune_cluster.check_worker_timeout(values.worker_timeout)
    config = load_config(values)
    from okddip_tf import preflight  # pylint: disable=import-outside-toplevel

    preflight.check_config(config)
    start_tensorflow(values)
    preflight.check_model(config)
    if command == "tune":
        preflight.check_search(config)
        from okddip_tf import tuner  # pylint: disable=import-outside-toplevel

        tuner.search(config, values.workdir, worker_timeout=values.worker_timeout)
        return None
    from okddip_tf import train  # pylint: disable=import-outside-toplevel

    train.train_and_evaluate(config, values.workdir)
    return None


def load_config(values):
    """The --config value; a config file that could not be loaded is a usage error."""
    config = values.config
    try:
        hasattr(config, "keys")  # ml_collections defers a file's load error to the first use
    except OSError as error:
        path = config_flags.get_config_filename(values["config"])
        problem = ("no such file" if not os.path.isfile(path.split(":")[0]) else
                   " ".join(str(error).split()))
        raise errors.UsageError(f"--config={path}: {problem}.") from error
    return config


def start_tensorflow(values):
    if not (values.tf_logs or wants(sys.argv, "tf_logs", quiet.ENV_SHOW)):
        quiet.quieten()


def export(values):
    start_tensorflow(values)
    from okddip_tf.deploy import export as exporting, parity  # pylint: disable=C0415

    report = exporting.export_workdir(
        values.workdir, values.checkpoint, values.export_dir, model_name=values.model_name,
        version=values.model_version, overwrite=values.overwrite, formats=values.formats,
        eval_examples=values.eval_examples, representative_examples=values.calibration_images,
        int8_calibration=values.int8_calibration, examples=values.examples)
    print(parity.format_report(report))


def reproduce(values):
    from okddip_tf import reproduce as reproducing  # pylint: disable=import-outside-toplevel

    # The arguments are checked before TensorFlow starts (a wrong one fails in a second).
    try:
        train_seeds = tuple(int(seed) for seed in values.train_seeds or ())
    except ValueError:
        raise errors.UsageError(f"--train_seeds takes comma-separated whole numbers, got "
                                f"{','.join(values.train_seeds)!r}.") from None
    budget = reproducing.Budget(epochs=values.epochs, seeds=values.seeds,
                                train_seeds=train_seeds or None,
                                train_examples=values.train_examples, smoke=values.smoke)
    if values.parallel < 1:
        raise errors.UsageError(f"--parallel must be >= 1, got {values.parallel}.")
    check_ray_flags(values)
    experiment, _ = reproducing.selection(values.experiment, values.only)
    if values.prior_results:
        reproducing.report.load_prior(values.prior_results, experiment, budget)
    cluster = None
    if values.ray and not values.report_only:  # Ray's errors before TensorFlow starts too
        cluster = reproducing.ray_runner.Cluster(values.ray, values.cell_cpus, values.cell_gpus)
    try:
        start_tensorflow(values)
        _, tasks = reproducing.reproduce(
            values.experiment, values.workdir, budget, only=values.only,
            parallel=values.parallel, report_only=values.report_only,
            report_dir=values.report_dir, prior_results=values.prior_results, cluster=cluster)
    finally:
        if cluster is not None:
            cluster.close()
    failed = [task for task in tasks if task.state == "failed"]
    if failed:
        raise errors.TrainingFailed(
            f"{len(failed)} of {len(tasks)} trainings did not finish ("
            f"{', '.join(task.name for task in failed)}); each one's reason is above (and in "
            "its train.log). Running the same command again retries them.")


def check_ray_flags(values):
    """--cell_cpus and --cell_gpus go with --ray, --parallel without it."""
    if values.ray is not None and not values.ray.strip():
        raise errors.UsageError("--ray needs an address: auto (the cluster `ray start` runs "
                                "here), local (start one here) or HOST:PORT.")
    if values.ray is None:
        given = [f"--{name}" for name in ("cell_cpus", "cell_gpus") if values[name].present]
        if given:
            raise errors.UsageError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'}"
                                    " with --ray=ADDRESS (the "
                                    "resources each cell asks a Ray cluster for); without "
                                    "--ray the cells run here, --parallel=N at a time.")
    elif values.parallel != 1:
        raise errors.UsageError("--parallel is for cells on this machine; with --ray, Ray runs "
                                "as many cells at once as the cluster has --cell_cpus and "
                                "--cell_gpus for.")


def run():
    """The `okddip` entry point; returns the exit status."""
    catch_signals()
    argv = sys.argv
    if not wants(argv, "tf_logs", quiet.ENV_SHOW):
        quiet.set_log_level()  # before anything imports TensorFlow
    if any(arg in HELPFULL_ARGS for arg in argv[1:]):
        return print_help(full_help())
    if any(arg in HELP_ARGS for arg in argv[1:]):
        command = find_command(argv)
        return print_help(command_help(command) if command else tool_help())
    command, values = find_command(argv), None
    verbose = wants(argv, "verbose", ENV_VERBOSE)
    try:
        command = command_of(argv)
        values = parse_flags(command, argv, verbose)
        verbose = values.verbose or verbose
        run_command(command, values)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM (`Interrupted`)
        interrupt.signum = getattr(interrupt, "signum", signal.SIGINT)
        if verbose:
            traceback.print_exception(interrupt)
        if sys.stdout.isatty():
            print(flush=True)  # off the line of a progress bar
        where = f"okddip {command}" if command else "okddip"
        print(f"{where}: {interrupted_line(command, values, interrupt)}", file=sys.stderr,
              flush=True)
        return SIGNAL_EXIT + interrupt.signum
    except errors.UserError as error:
        fail(command, error, verbose)
    return 0


if __name__ == "__main__":
    sys.exit(run())
