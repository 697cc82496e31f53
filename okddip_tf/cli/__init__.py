"""The `okddip` command: train, export and tune OKDDip groups, and reproduce the paper's tables.

    okddip train --config=FILE --workdir=DIR [--config.model.temperature=4 ...]
    okddip export --workdir=DIR [--checkpoint=PATH] [--export_dir=DIR] [--overwrite]
    okddip tune --config=FILE --workdir=DIR [--config.tuner.max_trials=20 ...]
    okddip reproduce --experiment=table2 --workdir=DIR [--epochs=60 --seeds=2 --only=resnet32]

Each command's flags are declared once, in COMMANDS (a `Flag` each: name, default, help, metavar;
declarations.py); the command's absl FlagValues and its `okddip <command> --help` (usage.py) are
both made from them, and parsing.py checks a command line against them. A command accepts only
its own flags and the shared ones (--verbose, --tf_logs): a flag of another command, or an
unknown one, is a usage error naming the command it belongs to or the closest flag of this one.
Config overrides use ml_collections' syntax on a locked config, so a mistyped key fails.

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

import os
import signal
import sys
import traceback

from absl import flags, logging
from ml_collections import config_flags

from okddip_tf import errors, quiet
from okddip_tf.cli.declarations import (COMMANDS, ENV_VERBOSE, HELP_ARGS, HELPFULL_ARGS, SHARED,
                                        SIGNAL_EXIT, flag_values)
from okddip_tf.cli.parsing import command_of, fail, find_command, parse_flags, wants
from okddip_tf.cli.usage import command_help, full_help, print_help, tool_help

__all__ = ["COMMANDS", "SHARED", "command_help", "flag_values", "parse_flags", "run"]

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
    if values.npz is not None and not os.path.isfile(values.npz):
        raise errors.MissingInputError(
            f"--npz={values.npz}: no such file. Give an .npz of x_train/y_train/x_test/y_test "
            "(or the compact JPEG layout; README, The JAX backend), or leave --npz out to read "
            "tensorflow-datasets.")
    budget = reproducing.Budget(epochs=values.epochs, seeds=values.seeds,
                                train_seeds=train_seeds or None,
                                train_examples=values.train_examples, smoke=values.smoke,
                                npz=values.npz and os.path.abspath(values.npz))
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
