"""The `okddip` command: train, export and tune OKDDip groups.

    okddip train --config=FILE --workdir=DIR [--config.model.temperature=4 ...]
    okddip export --workdir=DIR [--checkpoint=PATH] [--export_dir=DIR] [--overwrite]
    okddip tune --config=FILE --workdir=DIR [--config.tuner.max_trials=20 ...]
    okddip reproduce --experiment=table2 --workdir=DIR [--epochs=60 --seeds=2 --only=resnet32]

`okddip --help` and `okddip <command> --help` describe the commands and their flags. Config
overrides use ml_collections' syntax on a locked config, so a mistyped key fails. A wrong input
(okddip_tf.errors.UserError) ends the command with its message and no traceback (`--verbose` or
OKDDIP_VERBOSE=1 shows it); anything else is a bug and keeps its traceback. TensorFlow's start-up
log lines are hidden unless `--tf_logs` or OKDDIP_TF_LOGS=1 (see okddip_tf/quiet.py). Help and
argument errors do not import TensorFlow.
"""

import dataclasses
import os
import re
import sys
import textwrap
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from okddip_tf import errors, quiet

ENV_VERBOSE = "OKDDIP_VERBOSE"
HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_string("checkpoint", None, "export: a .keras group checkpoint.")
flags.DEFINE_string("export_dir", None, "export: where to write.")
flags.DEFINE_string("model_name", "leader", "export: the TF Serving model name.")
flags.DEFINE_integer("model_version", None, "export: the version to write.")
flags.DEFINE_bool("overwrite", False, "export: replace --model_version (without one: the latest).")
flags.DEFINE_list("formats", None, "export: any of saved_model,float32,float16,dynamic_int8,int8.")
flags.DEFINE_integer("eval_examples", None, "export: test images for the report's accuracy and "
                     "parity; 0: none.")
flags.DEFINE_integer("calibration_images", 1000, "export: training images calibrating int8.")
flags.DEFINE_enum("int8_calibration", "percentile", ["percentile", "minmax"],
                  "export: int8 activation ranges: 99.999th percentiles, or TFLite's min/max.")
flags.DEFINE_string("experiment", None, "reproduce: the paper's table or figure (table1, table2, "
                    "table4, table5, table6, figure2, figure3).")
flags.DEFINE_integer("epochs", 300, "reproduce: training epochs per cell; the paper's schedule "
                     "is scaled to them.")
flags.DEFINE_integer("seeds", 3, "reproduce: runs per cell (train.seed 0, 1, ...).")
flags.DEFINE_list("train_seeds", None, "reproduce: train only these of the --seeds seeds (e.g. "
                  "1,2 beside a seed 0 trained before); the report reads every seed.")
flags.DEFINE_integer("train_examples", None, "reproduce: train on the first N training images "
                     "only.")
flags.DEFINE_string("only", None, "reproduce: comma-separated words; only the cells whose row, "
                    "column, dataset, backbone, method or run id is one of them.")
flags.DEFINE_integer("parallel", 1, "reproduce: cells trained at once (one GPU each).")
flags.DEFINE_bool("report_only", False, "reproduce: train nothing; rebuild the report from the "
                  "workdir.")
flags.DEFINE_string("report_dir", None, "reproduce: where report.md, results.json and figures/ "
                    "go.")
flags.DEFINE_bool("smoke", False, "reproduce: tiny backbone and data (checks the harness; not a "
                  "measurement).")
flags.DEFINE_bool("verbose", False, f"Show the traceback of an error (or set {ENV_VERBOSE}=1).")
flags.DEFINE_bool("tf_logs", False, "Show TensorFlow's start-up and C++ log lines (or set "
                  f"{quiet.ENV_SHOW}=1).")
# How `okddip <command> --help` shows a flag's value and default, where not the flag's own.
METAVARS = {"config": "FILE[:ARG]", "workdir": "DIR", "checkpoint": "PATH", "export_dir": "DIR",
            "model_name": "NAME", "model_version": "N", "formats": "LIST", "eval_examples": "N",
            "calibration_images": "N", "int8_calibration": "percentile|minmax",
            "experiment": "NAME", "epochs": "E", "seeds": "N", "train_seeds": "K,..",
            "train_examples": "N", "only": "WORDS", "parallel": "N", "report_dir": "DIR"}
DEFAULTS = {"config": "required", "checkpoint": "<workdir>/checkpoints/last.keras",
            "export_dir": "<workdir>/export", "model_version": "the latest + 1",
            "formats": "all; int8 only with the run's training data",
            "eval_examples": "the run's evaluation split", "experiment": "required",
            "train_examples": "the whole split", "only": "every cell",
            "report_dir": "--workdir"}

CONFIG_HELP = """\
Config: --config=FILE[:ARG] loads FILE's get_config(ARG), e.g. configs/quickstart.py:smoke.
Override any key with --config.<section>.<key>=<value>, e.g. --config.model.temperature=4
--config.train.epochs=10 --config.optim.drop_epochs='(5, 8)'. A key the config lacks is an
error. Every key and its default: okddip_tf/config.py."""


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str
    usage: str
    flags: tuple
    example: str
    about: str = ""


COMMANDS = {
    "train": Command(
        "Train a group of peers and a leader; writes checkpoints, TensorBoard logs and metrics.",
        "okddip train --config=FILE[:ARG] --workdir=DIR [--config.<section>.<key>=VALUE ...]",
        ("config", "workdir"),
        "okddip train --config=configs/quickstart.py --workdir=runs/quickstart",
        "Running it again on the same --workdir continues the run from its last checkpoint."),
    "export": Command(
        "Write the trained leader as a TF Serving SavedModel, TFLite files and a report.",
        "okddip export --workdir=DIR [--checkpoint=PATH] [--export_dir=DIR] [flags]",
        ("workdir", "checkpoint", "export_dir", "model_name", "model_version", "overwrite",
         "formats", "eval_examples", "calibration_images", "int8_calibration"),
        "okddip export --workdir=runs/quickstart",
        "Needs --workdir (an `okddip train` run) or --checkpoint."),
    "tune": Command(
        "Search the config's hyperparameters with KerasTuner; writes the best trial's config.",
        "okddip tune --config=FILE[:ARG] --workdir=DIR [--config.tuner.<key>=VALUE ...]",
        ("config", "workdir"),
        "okddip tune --config=configs/cifar100_resnet32_tune.py:smoke --workdir=runs/search",
        "The search space is the config's tuner section (see okddip_tf/config.py)."),
    "reproduce": Command(
        "Run the paper's tables and figures at a budget; reports ours beside the paper's.",
        "okddip reproduce --experiment=NAME --workdir=DIR [--epochs=E] [--seeds=N] [flags]",
        ("experiment", "workdir", "epochs", "seeds", "train_seeds", "train_examples", "only",
         "parallel", "report_only", "report_dir", "smoke"),
        "okddip reproduce --experiment=table2 --workdir=runs/table2 --epochs=60 --seeds=2 "
        "--only=resnet32",
        "Each cell trains as an `okddip train` workdir under DIR; running the same command "
        "again resumes unfinished cells and skips finished ones. DIR gets report.md, "
        "results.json and figures/. Experiments: table1, table2 (CIFAR-10/100 comparison), "
        "table4 (ensembles), table5 (ablations), table6 (with a teacher), figure2 (diversity), "
        "figure3 (group size)."),
}
COMMON_FLAGS = ("verbose", "tf_logs")


def tool_help():
    width = max(map(len, COMMANDS))
    lines = ["okddip: Online Knowledge Distillation with Diverse Peers (OKDDip, AAAI 2020) for "
             "TensorFlow/Keras.", "", "Usage: okddip <command> [flags]", "", "Commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "Run `okddip <command> --help` for a command's flags and an example, "
              "`okddip --helpfull` for every flag.", "Read more: README.md (quickstart, configs, "
              "deploying the leader).", "", "Flags of every command:", *flag_lines(COMMON_FLAGS)]
    return "\n".join(lines)


def command_help(name):
    command = COMMANDS[name]
    lines = [f"okddip {name}: {command.summary}", "", f"Usage: {command.usage}"]
    if command.about:
        lines += ["", textwrap.fill(command.about, 96)]
    lines += ["", "Flags:", *flag_lines(command.flags + COMMON_FLAGS)]
    if "config" in command.flags:
        lines += ["", CONFIG_HELP]
    lines += ["", "Example:", f"  {command.example}"]
    return "\n".join(lines)


def flag_lines(names):
    lines = []
    for name in names:
        flag = FLAGS[name]
        value = f"={METAVARS[name]}" if name in METAVARS else ""
        if name == "workdir":
            default = "required" if "config" in names else "none"
        else:
            default = DEFAULTS.get(name, (flag.default_as_str or "none").strip("'"))
        about = re.sub(r"^<[^>]*>: ", "", flag.help).removeprefix("export: ")
        text = f"{about[:1].upper()}{about[1:]} (default: {default})"
        lines.append(f"  --{name}{value}")
        lines += textwrap.wrap(text, 92, initial_indent="      ", subsequent_indent="      ")
    return lines


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


def fail(command, error, verbose):
    """Ends the command on a user error: its message (and traceback only when verbose)."""
    if verbose:
        traceback.print_exception(error)
    where = f"okddip {command}" if command else "okddip"
    message = str(error).strip() or type(error).__name__
    print(f"{where}: {message}", file=sys.stderr)
    if isinstance(error, errors.UsageError) and "--help" not in message:
        print(f"Run `{where} --help` for its flags.", file=sys.stderr)
    sys.exit(error.exit_code)


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


def parse_flags(argv):
    """absl's flag parsing, with its errors reported as usage errors (no traceback)."""
    command = find_command(argv)
    verbose = wants(argv, "verbose", ENV_VERBOSE)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = str(error)
        if "Error whilst parsing config file" in message:  # ml_collections' text of a traceback
            if verbose:
                print(message, file=sys.stderr)
            last = re.sub(r"^[\w.]*(Error|Exception): ", "", message.strip().splitlines()[-1])
            message = f"{message.split(': Error whilst parsing config file')[0]}: {last}"
        fail(command, errors.UsageError(message), verbose)
    except (AttributeError, KeyError) as error:
        converted = config_key_error(error, argv)
        if converted is None:
            raise
        fail(command, converted, verbose)
    return None


def main(argv):
    command = find_command(argv)
    verbose = FLAGS.verbose or wants(argv, "verbose", ENV_VERBOSE)
    try:
        extra = [arg for arg in argv[1:] if arg != command]
        if command is None or extra:
            raise errors.UsageError(
                f"expected one command of {', '.join(COMMANDS)}" +
                (f", got {' '.join(argv[1:])!r}" if argv[1:] else "") +
                ". Run `okddip --help` for what each does.")
        logging.set_verbosity(logging.WARNING)  # tfds logs every file it opens at INFO
        return run_command(command)
    except errors.UserError as error:
        fail(command, error, verbose)
    return None


def run_command(command):
    if command == "reproduce":
        return reproduce()
    if command == "export":
        if FLAGS.workdir is None and FLAGS.checkpoint is None:
            raise errors.UsageError("needs --workdir=DIR (an `okddip train` run) or "
                                    "--checkpoint=PATH.")
        return export()
    if FLAGS.config is None or FLAGS.workdir is None:
        raise errors.UsageError("needs --config=FILE and --workdir=DIR.")
    config = load_config()
    from okddip_tf import preflight  # pylint: disable=import-outside-toplevel

    preflight.check_config(config)
    start_tensorflow()
    preflight.check_model(config)
    if command == "tune":
        preflight.check_search(config)
        from okddip_tf import tuner  # pylint: disable=import-outside-toplevel

        tuner.search(config, FLAGS.workdir)
        return None
    from okddip_tf import train  # pylint: disable=import-outside-toplevel

    train.train_and_evaluate(config, FLAGS.workdir)
    return None


def load_config():
    """FLAGS.config; a config file that could not be loaded is a usage error."""
    config = FLAGS.config
    try:
        hasattr(config, "keys")  # ml_collections defers a file's load error to the first use
    except OSError as error:
        path = config_flags.get_config_filename(FLAGS["config"])
        problem = ("no such file" if not os.path.isfile(path.split(":")[0]) else
                   " ".join(str(error).split()))
        raise errors.UsageError(f"--config={path}: {problem}.") from error
    return config


def start_tensorflow():
    if not (FLAGS.tf_logs or wants(sys.argv, "tf_logs", quiet.ENV_SHOW)):
        quiet.quieten()


def export():
    start_tensorflow()
    from okddip_tf.deploy import export as exporting, parity  # pylint: disable=C0415

    report = exporting.export_workdir(
        FLAGS.workdir, FLAGS.checkpoint, FLAGS.export_dir, model_name=FLAGS.model_name,
        version=FLAGS.model_version, overwrite=FLAGS.overwrite, formats=FLAGS.formats,
        eval_examples=FLAGS.eval_examples, representative_examples=FLAGS.calibration_images,
        int8_calibration=FLAGS.int8_calibration)
    print(parity.format_report(report))


def reproduce():
    if FLAGS.experiment is None or FLAGS.workdir is None:
        raise errors.UsageError("needs --experiment=NAME and --workdir=DIR.")
    from okddip_tf import reproduce as reproducing  # pylint: disable=import-outside-toplevel

    # The arguments are checked before TensorFlow starts (a wrong one fails in a second).
    try:
        train_seeds = tuple(int(seed) for seed in FLAGS.train_seeds or ())
    except ValueError:
        raise errors.UsageError(f"--train_seeds takes comma-separated whole numbers, got "
                                f"{','.join(FLAGS.train_seeds)!r}.") from None
    budget = reproducing.Budget(epochs=FLAGS.epochs, seeds=FLAGS.seeds,
                                train_seeds=train_seeds or None,
                                train_examples=FLAGS.train_examples, smoke=FLAGS.smoke)
    if FLAGS.parallel < 1:
        raise errors.UsageError(f"--parallel must be >= 1, got {FLAGS.parallel}.")
    reproducing.selection(FLAGS.experiment, FLAGS.only)
    start_tensorflow()
    _, tasks = reproducing.reproduce(FLAGS.experiment, FLAGS.workdir, budget, only=FLAGS.only,
                                     parallel=FLAGS.parallel, report_only=FLAGS.report_only,
                                     report_dir=FLAGS.report_dir)
    failed = [task for task in tasks if task.state == "failed"]
    if failed:
        raise errors.TrainingFailed(
            f"{len(failed)} of {len(tasks)} trainings did not finish ("
            f"{', '.join(task.name for task in failed)}); each one's reason is above (and in "
            "its train.log). Running the same command again retries them.")


def print_help(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. `okddip --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run():
    """The `okddip` entry point."""
    argv = sys.argv
    if not wants(argv, "tf_logs", quiet.ENV_SHOW):
        quiet.set_log_level()  # before anything imports TensorFlow
    if "--helpfull" in argv[1:] or "-helpfull" in argv[1:]:
        return print_help(f"{tool_help()}\n\nEvery flag:\n{FLAGS.get_help()}")
    if any(arg in HELP_ARGS for arg in argv[1:]):
        command = find_command(argv)
        return print_help(command_help(command) if command else tool_help())
    return app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    sys.exit(run())
