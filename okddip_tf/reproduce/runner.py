"""Runs an experiment's cells as ordinary `okddip train` workdirs, resuming and skipping.

Each (run, seed) trains in `<workdir>/<run id>/seed<k>/` through `okddip train` in a child
process (its output goes to `train.log` there), so a killed reproduction resumes every cell from
its last checkpoint, a finished cell is never trained again, and any cell can be inspected,
exported or continued by hand with the command `train_command` prints. Ctrl-C or SIGTERM
stops the running trainings too: `Runner.run` passes the signal on to each, waits for them a
bounded time, kills any still running, then raises the interrupt again.
"""

import dataclasses
import datetime
import os
import shlex
import signal
import subprocess
import sys
import time

from okddip_tf import atomic_files, checkpoint_files
from okddip_tf.errors import InputError, MissingInputError
from okddip_tf.reproduce import machine, manifest

CONFIG_FILE = os.path.join("configs", "paper.py")
SITTINGS = "sittings.json"
NOT_RECORDED = "not recorded"  # epochs trained before sittings.json kept their sitting
POLL_SECONDS = 10
# Cells sharing GPUs (--parallel with CUDA_VISIBLE_DEVICES set) each take only the memory they
# use, unless the environment says otherwise: by default JAX takes 75% of a GPU's memory at its
# start and TensorFlow nearly all of it, so the second cell on a GPU would run out of memory.
SHARED_GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
# How long a signal's stop waits for the running trainings (each stops within a training step and
# exits) before killing them.
STOP_SECONDS = 30


def config_file():
    """configs/paper.py of this checkout (the cells' config file)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, CONFIG_FILE)
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{CONFIG_FILE} is missing beside the okddip_tf package ({root}): `okddip reproduce` "
            "runs its cells from a checkout of the repository (pip install -e .).")
    return path


def run_dir(workdir, run, seed):
    return os.path.join(workdir, run.id, f"seed{seed}")


def override_value(value):
    """A value as ml_collections parses it from --config.<key>=<value>."""
    return f"({', '.join(map(str, value))})" if isinstance(value, tuple) else str(value)


def train_command(run, budget, seed, workdir, executable=None):
    """The `okddip train` argv of one cell and seed (its teacher, if any, in the same workdir)."""
    spec = f"{config_file()}:{run.config_arg}" + (",smoke" if budget.smoke else "")
    overrides = {**dict(run.options), **budget.overrides(seed, run.schedule), "train.verbose": 2}
    if run.teacher is not None:
        overrides["kd.teacher"] = os.path.abspath(run_dir(workdir, run.teacher, seed))
        overrides["kd.teacher_config"] = ""
    prefix = [executable or sys.executable, "-m", "okddip_tf.cli"]
    return prefix + ["train", f"--config={spec}", f"--workdir={run_dir(workdir, run, seed)}",
                     *(f"--config.{key}={override_value(value)}"
                       for key, value in overrides.items())]


def start_training(run, budget, seed, workdir, executable=None, env=None, preexec_fn=None):
    """Starts one cell's `okddip train` in a child process, its output appended to train.log
    in the cell's folder after a line with its command; returns (the process, the open log).

    Every runner starts its cells through this, on this machine or on a cluster's worker."""
    directory = run_dir(workdir, run, seed)
    os.makedirs(directory, exist_ok=True)
    record_sitting(directory, env)  # the CPU and GPUs that train it, here or on a worker
    command = train_command(run, budget, seed, workdir, executable)
    log = open(os.path.join(directory, "train.log"), "a", encoding="utf-8")
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=preexec_fn)
    except BaseException:
        log.close()
        raise
    return process, log


def close(log):
    if log is not None:
        log.close()


def epochs_done(directory):
    """How many epochs the run in `directory` has finished (0: none, or no run)."""
    history = atomic_files.read_json(os.path.join(directory, "history.json"), {})
    return len(history.get("loss", []))


def resume_epoch(directory):
    """The epoch the run in `directory` goes on after: its last saved checkpoint's, as `okddip
    train` reads it (history.json may hold one epoch more, logged just before a kill that came
    before its checkpoint). history.json's count for a folder without checkpoint files, and for
    one whose checkpoint is damaged (the training then says what is wrong and how to fix it)."""
    checkpoints = os.path.join(directory, "checkpoints")
    if not any(os.path.exists(os.path.join(checkpoints, name))
               for name in (checkpoint_files.STATE, checkpoint_files.LAST_CHECKPOINT)):
        return epochs_done(directory)
    try:
        return checkpoint_files.checkpoint_epochs(checkpoints)[0]
    except InputError:
        return epochs_done(directory)


def is_finished(directory, epochs):
    """Whether `directory` holds a run that finished exactly `epochs` epochs (and its metrics)."""
    metrics = atomic_files.read_json(os.path.join(directory, "metrics.json"))
    return bool(metrics) and metrics.get("epochs") == epochs and epochs_done(directory) == epochs


def epoch_seconds(directory):
    """The timed epochs' wall seconds (timing.json; None for epochs timed before it existed)."""
    timing = atomic_files.read_json(os.path.join(directory, "timing.json"), {})
    return timing.get("epoch_seconds", [])


def record_sitting(directory, env=None):
    """Appends to `sittings.json` the CPU and GPUs this sitting trains on (`env`: the training's
    environment, whose CUDA_VISIBLE_DEVICES picks them), the okddip_tf code it trains with and
    the epoch it starts from.

    A cell trained over several sittings may have moved between machines, and epoch times
    compare only within one CPU or GPU kind, so the report lists the CPUs and GPUs behind every
    seed; seeds added to a row later may have trained with newer code, so it lists the code too.
    """
    path = os.path.join(directory, SITTINGS)
    cpu = machine.cpu_kind()
    sittings = atomic_files.read_json(path, [])
    sittings.append({"from_epoch": resume_epoch(directory),
                     "cpu": f"{cpu['model_name']} ({cpu['kind']})",
                     "gpus": ", ".join(visible_gpus(env)) or "none",
                     "code": code_version(),
                     "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds")})
    atomic_files.write_json(path, sittings)


def visible_gpus(env=None):
    """The machine's GPUs that CUDA_VISIBLE_DEVICES in `env` (default: this process's
    environment) leaves to a training: all of them where it is unset."""
    names = machine.gpu_names()
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return names
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not all(entry.isdigit() for entry in entries):  # UUIDs: which GPUs is not known here,
        return sorted(set(names))  # so the machine's models, each once, stand for them
    return [names[int(entry)] for entry in entries if int(entry) < len(names)]


def code_version():
    """The okddip_tf that `okddip train` children run: the short commit of its git checkout,
    with "+changes" when tracked files differ from it; its package version outside a checkout."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = machine.git_commit(package)
    if commit is None:
        from importlib import metadata  # pylint: disable=import-outside-toplevel
        try:
            return f"okddip_tf {metadata.version('okddip_tf')}"
        except metadata.PackageNotFoundError:
            return "unknown"
    return commit + ("+changes" if machine.git_tree_changed(package) else "")


def sitting_counts(directory, epochs, field):
    """How many of the first `epochs` epochs in `directory` each sitting's `field` ("cpu", "gpus"
    or "code") trained ("not recorded" for epochs trained before sittings.json kept it)."""
    sittings = atomic_files.read_json(os.path.join(directory, SITTINGS), [])
    # In the order they ran: an epoch was last trained by the latest sitting that started at or
    # before it (a sitting that resumed from an earlier checkpoint trained its epochs again).
    starts = [(0, NOT_RECORDED)] + [(s["from_epoch"], s.get(field, NOT_RECORDED))
                                    for s in sittings]
    trained = {}
    for epoch in range(epochs):
        value = [name for start, name in starts if start <= epoch][-1]
        trained[value] = trained.get(value, 0) + 1
    return trained


def sitting_cpus(directory, epochs):
    """The CPUs that trained the first `epochs` epochs in `directory`, and how many epochs each
    trained ("not recorded" for epochs trained before sittings.json existed)."""
    return sitting_counts(directory, epochs, "cpu")


def duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclasses.dataclass
class Task:
    """One cell's run at one seed."""

    run: manifest.Run
    seed: int
    directory: str
    depends: tuple = ()  # tasks that must finish first (a KD run's teacher)
    state: str = "pending"  # pending | running | finished | failed | skipped
    reason: str = ""
    process: object = None
    log: object = None
    reported_epochs: int = -1

    @property
    def name(self):
        return f"{self.run.id} seed {self.seed}"


def plan(runs, budget, workdir):
    """Tasks for every run and trained seed, seeds in the outer loop (a first seed of every cell
    first)."""
    tasks = {}
    for seed in budget.trained_seeds:
        for run in runs:
            for needed in filter(None, (run.teacher, run)):
                key = (needed, seed)
                if key not in tasks:
                    depends = (tasks[(needed.teacher, seed)],) if needed.teacher else ()
                    tasks[key] = Task(needed, seed, run_dir(workdir, needed, seed), depends)
    return list(tasks.values())


class Runner:
    """Trains the tasks in order, `parallel` at a time, printing a progress line per epoch."""

    where = ""  # where the trainings run, in the starting line ("" here: on this machine)

    def __init__(self, tasks, budget, workdir, parallel=1, poll_seconds=POLL_SECONDS,
                 executable=None, echo=print, stop_seconds=None):
        self.tasks, self.budget, self.workdir = tasks, budget, workdir
        self.parallel, self.poll_seconds = max(1, parallel), poll_seconds
        self.stop_seconds = STOP_SECONDS if stop_seconds is None else stop_seconds
        self.executable, self.echo = executable, echo

    def label(self, task):
        return f"[{self.tasks.index(task) + 1}/{len(self.tasks)}] {task.name}"

    def run(self):
        """Trains every task; returns the tasks (with their final state)."""
        for task in self.tasks:
            reason = manifest.unavailable(task.run)
            if reason:
                task.state, task.reason = "skipped", f"not available: {reason}"
            elif is_finished(task.directory, self.budget.epochs):
                task.state, task.reason = "finished", "finished before; not trained again"
            elif epochs_done(task.directory) > self.budget.epochs:
                task.state = "failed"
                task.reason = (f"{task.directory} holds {epochs_done(task.directory)} epochs, a "
                               f"larger budget than --epochs={self.budget.epochs}: give each "
                               "budget its own --workdir")
            if task.state != "pending":
                self.echo(f"{self.label(task)}: {task.reason}.")
        try:
            self.train_pending()
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM as `okddip` raises it
            interrupt.stopped = self.stop(getattr(interrupt, "signum", signal.SIGINT))
            raise
        return self.tasks

    def train_pending(self):
        slots = [None] * self.parallel
        while any(task.state in ("pending", "running") for task in self.tasks):
            for index, task in enumerate(slots):
                if task is not None and task.process.poll() is not None:
                    self.finish(task)
                    slots[index] = None
            for index in range(self.parallel):
                if slots[index] is None:
                    slots[index] = self.start_next(index)
            for task in filter(None, slots):
                self.report_progress(task)
            if any(slots):
                time.sleep(self.poll_seconds)
            elif any(task.state == "pending" for task in self.tasks):  # all wait on failures
                for task in self.tasks:
                    if task.state == "pending":
                        task.state, task.reason = "failed", "its teacher did not finish"
                        self.echo(f"{self.label(task)}: not run, {task.reason}.")

    def stop(self, signum):
        """Passes `signum` on to the running trainings, waits for them (at most stop_seconds),
        kills the ones still running; returns a description of each one stopped."""
        running = [task for task in self.tasks
                   if task.process is not None and task.process.poll() is None]
        for task in running:
            task.process.send_signal(signum)  # each writes its interrupted line into train.log
        deadline = time.monotonic() + self.stop_seconds
        stopped = []
        for task in running:
            try:
                task.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                how = "stopped"
            except subprocess.TimeoutExpired:
                task.process.kill()
                task.process.wait()
                how = f"killed after {self.stop_seconds:g} s"
            close(task.log)
            task.state, task.reason = "interrupted", f"{how} after epoch " \
                f"{epochs_done(task.directory)} of {self.budget.epochs}"
            self.echo(f"{self.label(task)}: {task.reason}; rerunning the command resumes it.")
            stopped.append(f"{task.name} ({task.reason})")
        return stopped

    def start_next(self, slot):
        for task in self.tasks:
            if task.state != "pending":
                continue
            if any(needed.state == "failed" for needed in task.depends):
                task.state, task.reason = "failed", "its teacher did not finish"
                self.echo(f"{self.label(task)}: not run, {task.reason}.")
                continue
            if all(needed.state == "finished" for needed in task.depends):
                self.start(task, slot)
                return task
        return None

    def start(self, task, slot):
        done = resume_epoch(task.directory)
        self.echo(f"{self.label(task)}: " + (f"resuming after epoch {done}" if done else
                                               "starting") +
                  f" of {self.budget.epochs}{self.where}; log "
                  f"{os.path.join(task.directory, 'train.log')}")
        task.process, task.log = self.launch(task, slot)
        task.state, task.reported_epochs = "running", done

    def launch(self, task, slot):
        """Starts the task's `okddip train`; returns (its process, its open log or None).

        The process answers poll(), wait(timeout), send_signal(signum), kill() and returncode,
        as a subprocess.Popen does; a runner elsewhere (ray_runner) returns its own."""
        env = dict(os.environ)
        if self.parallel > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(slot)  # one accelerator per concurrent cell
        elif self.parallel > 1:
            env.update({key: value for key, value in SHARED_GPU_ENV.items() if key not in env})
        return start_training(task.run, self.budget, task.seed, self.workdir, self.executable,
                              env)

    def exit_reason(self, task, code):
        """Why a task whose training exited with `code` has not finished."""
        tail = last_lines(os.path.join(task.directory, "train.log"), 2)
        return f"okddip train exited with {code}: {tail}"

    def finish(self, task):
        close(task.log)
        code = task.process.returncode
        if code == 0 and is_finished(task.directory, self.budget.epochs):
            task.state, task.reason = "finished", "finished"
            seconds = [s for s in epoch_seconds(task.directory) if s is not None]
            self.echo(f"{self.label(task)}: finished {self.budget.epochs} epochs "
                      f"({duration(sum(seconds))} of timed epochs).")
            return
        task.state = "failed"
        task.reason = self.exit_reason(task, code)
        self.echo(f"{self.label(task)}: FAILED ({task.reason}). Rerun to retry it; the other "
                  "cells go on.")

    def report_progress(self, task):
        try:
            done = epochs_done(task.directory)
            timed = [s for s in epoch_seconds(task.directory)[1:] if s is not None][-3:]
        except ValueError:  # a file caught mid-write by a trainer that writes in place
            return  # okddip train writes atomically; the next poll reads it whole
        if done == task.reported_epochs:
            return
        task.reported_epochs = done
        left = self.budget.epochs - done
        speed = (f", {duration(sum(timed) / len(timed))} per epoch, about "
                 f"{duration(left * sum(timed) / len(timed))} left for this cell") if timed else ""
        self.echo(f"{self.label(task)}: epoch {done}/{self.budget.epochs}{speed}.")


def last_lines(path, count):
    """The last `count` lines the latest sitting wrote into a train.log, joined by " | "."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    lines = lines[starts[-1] + 1:] if starts else lines
    return " | ".join(lines[-count:]) or "no output"
