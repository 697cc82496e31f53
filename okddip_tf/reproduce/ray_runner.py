"""`okddip reproduce --ray=ADDRESS`: the grid's cells as Ray tasks on a cluster's workers.

Each cell (one run at one seed) is one Ray task asking for the resources a cell needs
(`--cell_cpus`, `--cell_gpus`). The task runs the cell as the local runner does
(`runner.start_training`: `okddip train` in a child process, its output appended to the cell's
train.log) and returns its exit status; everything else is the local runner's own loop
(`runner.Runner`): finished cells are skipped, unfinished ones resume from their checkpoints,
teachers train before their students, the progress lines come from the cells' folders and the
report from the same files. So the workdir must be one path that the machine running `okddip
reproduce` and every worker see (a shared file system), and every worker needs this checkout
installed (`pip install -e ".[ray]"`), with the environment its cells need (`TFDS_DATA_DIR`).

A worker that dies mid-cell (its machine lost, its process killed) takes its training with it,
so no orphan keeps writing the cell's folder beside the retried task: Ray stops a dead worker's
process group, and the training also asks the kernel to kill it when its parent dies (which
holds where the group is not stopped, e.g. when the node's own Ray processes die). Ray runs the
task again (up to MAX_RETRIES times), on that machine or another, and the cell resumes from its
last checkpoint as any rerun `okddip train` does.

Ray is imported here only, and only when --ray is given (`import_ray`).
"""

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time

from okddip_tf.errors import ConfigError, DependencyError, UserError
from okddip_tf.reproduce import runner

# How often Ray runs a cell again whose worker died (Ray's own default for tasks). A training
# that exits with an error is not retried: it fails as on one machine, and a rerun retries it.
MAX_RETRIES = 3
INSTALL = 'pip install -e ".[ray]"'
PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent exits
CANCEL_POLL_SECONDS = 0.5


def import_ray():
    """The `ray` module, or a DependencyError saying how to install it."""
    try:
        import ray  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise DependencyError(f"--ray needs Ray, which is not installed: {INSTALL} (or pip "
                              f"install \"ray>=2.60\") on this machine and every worker.") \
            from error
    return ray


def child_setup():
    """A preexec_fn for a cell's training: SIGINT and SIGTERM unblocked (a Ray worker blocks
    SIGINT, and a blocked signal stays blocked through fork and exec, so the training would
    never hear the stop), and, on Linux, a kill when the process that started it dies."""
    prctl = None
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    parent = os.getpid()

    def setup():  # runs in the child between fork and exec: nothing but these calls
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the request was made
                os._exit(1)  # pylint: disable=protected-access

    return setup


def train_cell(run, budget, seed, workdir, executable=None):
    """A Ray task: trains one cell on this worker as the local runner does; returns the exit
    status of its `okddip train`.

    SIGKILL rather than a gentle signal for a lost parent: the retried task may start the cell
    again at once, and a checkpoint is renamed into place whole, so nothing is lost.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A worker of a cluster started with SIGINT ignored (`ray start` from a background job
        # of a script) would never see ray.cancel, which arrives as SIGINT's handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    process, log = runner.start_training(run, budget, seed, workdir, executable,
                                         preexec_fn=child_setup())
    try:
        # Short waits: ray.cancel raises KeyboardInterrupt only between Python bytecodes, which a
        # blocking wait for the child would hold off until the training ended.
        while process.poll() is None:
            time.sleep(CANCEL_POLL_SECONDS)
        return process.returncode
    except KeyboardInterrupt:  # ray.cancel (Ctrl-C on the driver): stop as a local cell stops
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=runner.STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        log.close()


class Cluster:
    """A connection to a Ray cluster and the resources each cell asks it for.

    Args:
      address: "local" starts a cluster on this machine (stopped at `close`); "auto" joins the
        one `ray start` runs here; any other value is a cluster's address (host:port).
      cpus: CPUs a cell asks for (Ray's scheduling unit; it also sets the cell's
        OMP_NUM_THREADS).
      gpus: GPUs a cell asks for; None: 1 where the cluster has GPUs, else 0. A fraction lets
        several cells share one GPU.
    """

    def __init__(self, address, cpus=None, gpus=None):
        cpus = 1.0 if cpus is None else cpus
        for name, value in (("--cell_cpus", cpus), ("--cell_gpus", gpus)):
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value:g}.")
        self.address = address
        self.ray = import_ray()
        self.ray_started_here = not self.ray.is_initialized()
        if self.ray_started_here:
            self.connect()
        nodes = [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]
        self.gpus = (1.0 if any(node.get("GPU", 0) for node in nodes) else 0.0) \
            if gpus is None else gpus
        self.cpus = cpus
        self.nodes = nodes
        fits = [node for node in nodes if node.get("CPU", 0) >= self.cpus
                and node.get("GPU", 0) >= self.gpus]
        if not fits:
            largest = ", ".join(f"{node.get('CPU', 0):g} CPUs and {node.get('GPU', 0):g} GPUs"
                                for node in nodes) or "no live node"
            raise ConfigError(
                f"no node of the Ray cluster at {address} has the {self.cpus:g} CPUs and "
                f"{self.gpus:g} GPUs a cell asks for (its nodes: {largest}); lower --cell_cpus "
                "or --cell_gpus, or add a node that has them.")

    def connect(self):
        """ray.init for the address; this process keeps its own SIGTERM handling (the command's
        stop), which ray.init would replace with an exit."""
        handler = signal.getsignal(signal.SIGTERM)
        # The cells' output goes to their train.log files, not to this terminal.
        options = {"logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if self.address == "local":  # a new cluster, even where `ray start` left one's address
                self.ray.init(address="local", include_dashboard=False, **options)
            else:
                self.ray.init(address=self.address, **options)
        except ConnectionError as error:
            raise UserError(
                f"--ray={self.address}: no Ray cluster answered ({' '.join(str(error).split())})"
                ". Start one with `ray start --head` (and `ray start --address=HEAD:6379` on the "
                "other machines), or use --ray=local to start one on this machine.") from error
        finally:
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)

    def describe(self):
        total = {key: sum(node.get(key, 0) for node in self.nodes) for key in ("CPU", "GPU")}
        return (f"Ray cluster at {self.address}: {len(self.nodes)} node(s), {total['CPU']:g} "
                f"CPUs, {total['GPU']:g} GPUs; each cell asks for {self.cpus:g} CPU(s) and "
                f"{self.gpus:g} GPU(s), and runs again (up to {MAX_RETRIES} times) if its "
                "worker dies.")

    def close(self):
        """Disconnects (and stops a cluster that `--ray=local` started)."""
        if self.ray_started_here and self.ray.is_initialized():
            self.ray.shutdown()


class RayTraining:
    """A cell's Ray task, answering as the subprocess.Popen of a local cell does."""

    def __init__(self, ray, reference):
        self.ray, self.reference = ray, reference
        self.returncode, self.error = None, None

    def collect(self):
        try:
            self.returncode = self.ray.get(self.reference)
        except self.ray.exceptions.RayError as error:  # retries used up, or cancelled
            self.returncode = -1
            self.error = " ".join(str(error).split())[:300]

    def poll(self):
        if self.returncode is None and self.ray.wait([self.reference], timeout=0)[0]:
            self.collect()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            if not self.ray.wait([self.reference], timeout=timeout)[0]:
                raise subprocess.TimeoutExpired("ray task", timeout)
            self.collect()
        return self.returncode

    def send_signal(self, signum):
        del signum  # the task passes SIGINT on to its training (train_cell)
        self.ray.cancel(self.reference, force=False)

    def kill(self):
        self.ray.cancel(self.reference, force=True)


class RayRunner(runner.Runner):
    """The local runner's loop with each cell started as a Ray task on `cluster`.

    Every cell whose teacher (if any) has finished is handed to Ray at once; Ray runs as many at
    a time as the cluster's resources allow.
    """

    where = " on Ray"

    def __init__(self, tasks, budget, workdir, cluster, **options):
        super().__init__(tasks, budget, workdir, parallel=len(tasks), **options)
        self.cluster = cluster
        self.remote = cluster.ray.remote(train_cell).options(
            num_cpus=cluster.cpus, num_gpus=cluster.gpus, max_retries=MAX_RETRIES)

    def launch(self, task, slot):
        del slot  # Ray gives each cell its GPUs (CUDA_VISIBLE_DEVICES) by --cell_gpus
        reference = self.remote.remote(task.run, self.budget, task.seed,
                                       os.path.abspath(self.workdir), self.executable)
        return RayTraining(self.cluster.ray, reference), None

    def exit_reason(self, task, code):
        error = task.process.error
        if error is None:
            return super().exit_reason(task, code)
        return f"its Ray task failed ({error})"
