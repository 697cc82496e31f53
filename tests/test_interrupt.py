"""Ctrl-C (SIGINT) and SIGTERM: every command stops with one line, exit status 128 + the signal,
no traceback, nothing half-written; `okddip reproduce` stops its `okddip train` children first.

Each test starts the command in a subprocess, waits until it is where the signal should land (an
epoch under way, a child training running), sends the signal and reads what comes back. The
trainings are the smoke config's (tfds cifar100 from $TFDS_DATA_DIR); `okddip reproduce` runs a
stand-in child, as tests/test_reproduce.py's runner tests do, unless a test says otherwise.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--config=configs/quickstart.py:smoke"
TEMPORARY = (".tmp-", ".partial-")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def env(**extra):
    values = {key: value for key, value in os.environ.items()
              if key not in ("TF_CPP_MIN_LOG_LEVEL", "OKDDIP_VERBOSE", "OKDDIP_TF_LOGS")}
    values["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                         values.get("PYTHONPATH")]))
    return {**values, **extra}


def start(args, out_dir, code=None, new_session=False, **extra):
    """`okddip ARGS` (or `python -c CODE ARGS`) in the background, its output into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = ["-c", code] if code else ["-m", "okddip_tf.cli"]
    with open(out_dir / "stdout", "w") as stdout, open(out_dir / "stderr", "w") as stderr:
        return subprocess.Popen([sys.executable, *prefix, *args], cwd=REPO_ROOT, env=env(**extra),
                                stdout=stdout, stderr=stderr, start_new_session=new_session)


def wait_for(condition, process, timeout=240, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited with {process.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


def stop(process, signum, out_dir, timeout=60):
    """Sends `signum` (0: none), waits; returns (exit status, stdout, stderr)."""
    if signum:
        process.send_signal(signum)
    status = process.wait(timeout=timeout)
    return status, (out_dir / "stdout").read_text(), (out_dir / "stderr").read_text()


def leftovers(workdir):
    return [str(path) for path in pathlib.Path(workdir).rglob("*")
            if path.name.startswith(TEMPORARY)]


def is_gone(pid):
    """Whether process `pid` no longer runs (gone, or a zombie nobody waits for any more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def train_until(tmp_path, ready, signum):
    """A smoke `okddip train` of 20 epochs, sent `signum` once `ready(workdir, stdout)`."""
    workdir, out = tmp_path / "run", tmp_path / "out"
    process = start(["train", SMOKE, f"--workdir={workdir}", "--config.train.epochs=20"], out)
    try:
        wait_for(lambda: ready(workdir, (out / "stdout").read_text()), process,
                 what="the training getting there")
        return (workdir, *stop(process, signum, out))
    finally:
        if process.poll() is None:
            process.kill()


def epoch_started(workdir, stdout):
    del workdir
    return "Epoch 1/20" in stdout


def epoch_finished(workdir, stdout):
    del stdout
    return (workdir / "checkpoints" / "state.json").is_file()


@pytest.fixture(scope="module")
def trainings(tmp_path_factory, tfds_data_dir):
    """Two smoke trainings, run side by side: SIGINT after epoch 1, SIGTERM during epoch 1."""
    del tfds_data_dir
    cases = {"sigint": (epoch_finished, signal.SIGINT),
             "sigterm": (epoch_started, signal.SIGTERM)}

    def run(name):
        ready, signum = cases[name]
        return name, train_until(tmp_path_factory.mktemp(name), ready, signum)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, cases))


def test_ctrl_c_stops_train_after_its_checkpoint_with_one_line(trainings):
    workdir, status, _, stderr = trainings["sigint"]
    assert status == 130, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    match = re.fullmatch(r"okddip train: interrupted after epoch (\d+) of 20; rerun the same "
                         r"command to resume\.", lines[0])
    assert match, stderr
    state = json.loads((workdir / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == int(match.group(1)) >= 1
    history = json.loads((workdir / "history.json").read_text())
    assert len(history["loss"]) >= state["epochs_done"]
    assert not leftovers(workdir)


def test_sigterm_stops_train_in_its_first_epoch_with_one_line(trainings):
    workdir, status, _, stderr = trainings["sigterm"]
    assert status == 143, stderr
    assert stderr.strip().splitlines() == [
        "okddip train: stopped by SIGTERM before its first epoch finished; rerun the same "
        "command to start again."], stderr
    assert not (workdir / "checkpoints" / "last.keras").exists()
    assert not leftovers(workdir)


# --- okddip reproduce ------------------------------------------------------------------------

# Stands in for the `okddip train` children of `okddip reproduce`: writes its pid, then waits.
# FAKE_STUBBORN=1: it ignores SIGINT and SIGTERM (the runner must kill it).
FAKE_TRAINER = '''\
import os, signal, sys, time
workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
if os.environ.get("FAKE_STUBBORN"):
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
else:
    def stop(signum, frame):
        print(f"okddip train: stopped by signal {signum}", flush=True)
        sys.exit(128 + signum)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "pid"), "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.1)
'''

# `okddip reproduce` whose children run FAKE_TRAINER, stopped after at most 2 s.
REPRODUCE_WITH_FAKE = '''\
import sys
from okddip_tf import cli
from okddip_tf.reproduce import runner

real = runner.train_command


def fake(run, budget, seed, workdir, executable=None):
    return [sys.executable, "-c", {fake!r}, *real(run, budget, seed, workdir)[3:]]


runner.train_command = fake
runner.STOP_SECONDS = 2
sys.argv = ["okddip", *sys.argv[1:]]
sys.exit(cli.run())
'''.format(fake=FAKE_TRAINER)

CELL = "cifar100_resnet32_okddip_branch_two_level-False"


def reproduce_until_child(tmp_path, signum, code=REPRODUCE_WITH_FAKE, group=False,
                          log_shows="", **extra):
    """`okddip reproduce` of one Table 5 cell, sent `signum` once its child runs and its
    train.log holds `log_shows` (`group`: to its whole process group, as a terminal's Ctrl-C
    is); returns (status, stdout, stderr, whether the child was gone when the parent exited,
    the child's directory). A child left running is killed after."""
    workdir, out = tmp_path / "grid", tmp_path / "out"
    cell, pid = workdir / CELL / "seed0", None
    process = start(["reproduce", "--experiment=table5", f"--workdir={workdir}", "--epochs=2",
                     "--seeds=1", "--smoke", "--only=w/o two-level"], out, code=code,
                    new_session=group, **extra)
    try:
        wait_for(lambda: (cell / "pid").is_file() and (cell / "pid").read_text() and
                 log_shows in (cell / "train.log").read_text(), process,
                 what="a child training")
        pid = int((cell / "pid").read_text())
        if group:
            os.killpg(process.pid, signum)
        status, stdout, stderr = stop(process, 0 if group else signum, out)
        return status, stdout, stderr, is_gone(pid), cell
    finally:
        for each in filter(None, (process.pid, pid)):
            if not is_gone(each):
                os.kill(each, signal.SIGKILL)


@pytest.fixture(scope="module")
def reproductions(tmp_path_factory):
    """`okddip reproduce` with stand-in children, side by side: name -> reproduce_until_child."""
    cases = {"sigint": (signal.SIGINT, {}), "sigterm": (signal.SIGTERM, {}),
             "stubborn": (signal.SIGINT, {"FAKE_STUBBORN": "1"})}

    def run(name):
        signum, extra = cases[name]
        return name, reproduce_until_child(tmp_path_factory.mktemp(name), signum, **extra)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, cases))


@pytest.mark.parametrize("name, signum, status, how", [
    ("sigint", signal.SIGINT, 130, "interrupted"),
    ("sigterm", signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_reproduce_passes_the_signal_on_and_waits_for_its_child(reproductions, name, signum,
                                                                 status, how):
    result, stdout, stderr, child_gone, cell = reproductions[name]
    assert result == status, stderr
    assert child_gone
    assert stderr.strip().splitlines() == [
        f"okddip reproduce: {how}; stopped 1 running training(s): {CELL} seed 0 (stopped after "
        "epoch 0 of 2). Rerun the same command to resume."], stderr
    assert f"{CELL} seed 0: stopped after epoch 0 of 2; rerunning the command resumes it." \
        in stdout
    # The child got the same signal and said so in its log.
    assert f"okddip train: stopped by signal {int(signum)}" in (cell / "train.log").read_text()


def test_reproduce_kills_a_child_that_does_not_stop(reproductions):
    result, _, stderr, child_gone, _ = reproductions["stubborn"]
    assert result == 130, stderr
    assert child_gone
    assert "(killed after 2 s after epoch 0 of 2)" in stderr and "Traceback" not in stderr


# `okddip reproduce` as it is, with a file holding each child's pid beside its train.log.
REPRODUCE_NOTING_PIDS = """\
import os, sys
from okddip_tf import cli
from okddip_tf.reproduce import runner

start = runner.Runner.start


def noting(self, task, slot):
    start(self, task, slot)
    with open(os.path.join(task.directory, "pid"), "w") as f:
        f.write(str(task.process.pid))


runner.Runner.start = noting
sys.argv = ["okddip", *sys.argv[1:]]
sys.exit(cli.run())
"""


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_reproduce_and_its_real_training(tmp_path, tfds_data_dir):
    """The terminal's SIGINT reaches the parent and its `okddip train` child; the parent passes
    it on as well, and the child stops with its one line (the repeat does not interrupt it)."""
    del tfds_data_dir
    cell = tmp_path / "grid" / CELL / "seed0"
    result, _, stderr, child_gone, _ = reproduce_until_child(
        tmp_path, signal.SIGINT, REPRODUCE_NOTING_PIDS, group=True, log_shows="Epoch 1/2")
    assert result == 130, stderr
    assert child_gone
    assert "okddip reproduce: interrupted; stopped 1 running training(s)" in stderr
    log = (cell / "train.log").read_text()
    assert "Traceback" not in log and "Traceback" not in stderr
    assert re.search(r"^okddip train: interrupted (before|after) ", log, re.M), log
    assert not leftovers(cell)
