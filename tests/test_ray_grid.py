"""`okddip reproduce --ray`: the grid's cells as Ray tasks on a one-machine Ray cluster.

The module starts a cluster the way the README tells users to (`ray start --head`, here with 2
CPUs, no dashboard, stopped when the module ends) and runs cells on it, each asking for 1 CPU.
Ray resolves a head's 127.0.0.1 to this machine's own address, so the cluster never leaves the
machine.

Default suite: a stand-in trainer (a script answering for `okddip train`, one epoch per
EPOCH_SECONDS, resuming after the epochs its history holds) runs three cells through the Ray
runner and through the local runner, and the two reports are compared; a Ray worker killed
mid-cell takes its training with it, and the retried task resumes the cell. Slow (`--runslow`,
minutes on 2 cores): the same two checks through the command line with real smoke-sized cells
of `okddip train`.
"""

import _thread
import json
import os
import pathlib
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from okddip_tf import errors
from okddip_tf.reproduce import Budget, build_report, manifest, ray_runner, runner

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Three of Table 5's cells: the comparison needs a grid, not one cell.
CELLS = ("w/o SA (random)", "w/o SA (mean)", "w/o two-level")
# What differs between two runs of the same cells: when and how fast they ran.
TIMING = ("generated", "wall_seconds", "epoch_seconds", "median_epoch_seconds",
          "wall_seconds_per_seed", "timed_epochs")
RAY_START_SECONDS = 180

STAND_IN = '''\
#!{python}
"""Stands in for `python -m okddip_tf.cli train`: {epoch_seconds} s an epoch, resuming after the
epochs history.json holds, as okddip train resumes from its checkpoint."""
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as okddip train's own handler does
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
workdir, epochs = args["workdir"], int(args["config.train.epochs"])
def write(name, value):
    path = os.path.join(workdir, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)
os.makedirs(workdir, exist_ok=True)
path = os.path.join(workdir, "history.json")
history = json.load(open(path)) if os.path.exists(path) else {{"loss": [], "val_leader_accuracy": []}}
with open(os.path.join(workdir, "sittings.jsonl"), "a") as f:
    f.write(json.dumps({{"pid": os.getpid(), "after": len(history["loss"])}}) + "\\n")
cell = sum(map(ord, os.path.basename(os.path.dirname(workdir)))) % 50  # differs by cell
for epoch in range(len(history["loss"]), epochs):
    time.sleep({epoch_seconds})
    history["loss"].append(1.0 / (epoch + 1))
    history["val_leader_accuracy"].append((cell + 10 * epoch) / 100)
    write("history.json", history)
write("metrics.json", {{"epochs": epochs, "reporting": {{"method_accuracy": "leader_accuracy",
                                                       "ensemble": None}}}})
write("timing.json", {{"epoch_seconds": [{epoch_seconds}] * epochs}})
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A one-node Ray cluster (2 CPUs) started by `ray start --head --block`: its address.

    The cluster takes its token from the environment (Ray's token authentication), which this
    process and the commands it runs share while the module runs; nothing is written to ~/.ray.
    """
    port = free_port()
    ray = pathlib.Path(sys.executable).parent / "ray"
    log = tmp_path_factory.mktemp("ray_head") / "ray_start.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        patch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        yield from head_node(ray, port, log)


def head_node(ray, port, log):
    # The workers run this checkout's okddip_tf, as `pip install -e .` gives every node.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + RAY_START_SECONDS
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not start a cluster:\n{log.read_text()}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # it stops the processes it started, and only those
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        # `ray start` leaves its address for a later `ray.init()` to join; this one is gone.
        current = pathlib.Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.fixture(scope="module")
def cluster(ray_address):
    """This process connected to the cluster as a driver, each cell asking for 1 CPU."""
    connected = ray_runner.Cluster(ray_address, cpus=1)
    yield connected
    connected.close()


def stand_in(tmp_path, epoch_seconds):
    path = tmp_path / "stand_in_trainer"
    path.write_text(STAND_IN.format(python=sys.executable, epoch_seconds=epoch_seconds))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def table5_tasks(workdir, budget, cells=CELLS):
    experiment = manifest.EXPERIMENTS["table5"]
    runs = [cell.run for cell in experiment.cells if cell.column in cells]
    return runner.plan(runs, budget, str(workdir))


def without_timing(value):
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items() if key not in TIMING}
    if isinstance(value, list):
        return [without_timing(item) for item in value]
    return value


def report_without_timing(directory):
    """report.md with its time stamp and each cell's wall time left out."""
    text = (directory / "report.md").read_text()
    text = re.sub(r"Generated \S+", "Generated", text)
    return re.sub(r"\| \d+m\d\ds \(\d+m\d\ds\) \|", "| |", text)


def test_ray_grid_writes_the_report_the_local_runner_writes(tmp_path, cluster):
    executable, budget = stand_in(tmp_path, 0.2), Budget(epochs=3, seeds=1)
    lines = []
    on_ray = table5_tasks(tmp_path / "ray", budget)
    ray_runner.RayRunner(on_ray, budget, str(tmp_path / "ray"), cluster, executable=executable,
                         poll_seconds=0.1, echo=lines.append).run()
    assert [task.state for task in on_ray] == ["finished"] * 3, [t.reason for t in on_ray]
    assert sum(" starting of 3 on Ray; log " in line for line in lines) == 3
    assert any(re.search(r": epoch [12]/3[.,]", line) for line in lines), lines  # progress
    local = table5_tasks(tmp_path / "local", budget)
    runner.Runner(local, budget, str(tmp_path / "local"), executable=executable,
                  poll_seconds=0.1, echo=lines.append).run()
    experiment = manifest.EXPERIMENTS["table5"]
    selected = [cell for cell in experiment.cells if cell.column in CELLS]
    results = [build_report(experiment, str(tmp_path / where), budget, selected, lines.append)
               for where in ("ray", "local")]
    assert [cell["state"] for cell in results[0]["cells"]].count("finished") == 3
    assert without_timing(results[0]) == without_timing(results[1])
    assert report_without_timing(tmp_path / "ray") == report_without_timing(tmp_path / "local")
    # Run again, every cell is skipped: nothing is handed to Ray.
    again = table5_tasks(tmp_path / "ray", budget)
    lines.clear()
    ray_runner.RayRunner(again, budget, str(tmp_path / "ray"), cluster, executable=executable,
                         poll_seconds=0.1, echo=lines.append).run()
    assert sum("finished before; not trained again" in line for line in lines) == 3
    assert not any("on Ray" in line for line in lines)


def parent_of(pid):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def is_gone(pid):
    """Whether process `pid` has exited (a zombie not yet reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def epochs_in(path, key):
    """len(json[key]) or json[key] of the JSON file at `path` (0 while it does not exist)."""
    if not path.exists():
        return 0
    value = json.loads(path.read_text())[key]
    return len(value) if isinstance(value, list) else value


def kill_worker_after_first_epoch(find_training, epochs_done, timeout=300):
    """In a thread: once `epochs_done()` (the epochs a rerun resumes after) is 1 or more,
    SIGKILLs the Ray worker, the parent of `find_training()`'s pid; the returned dict gets the
    training's pid, the worker's and the epochs done then."""
    killed = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, done = find_training(), epochs_done()
            if pid and done >= 1:
                killed.update(pid=pid, worker=parent_of(pid), epochs=done)
                os.kill(killed["worker"], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def test_a_killed_worker_is_retried_and_its_cell_resumes(tmp_path, cluster):
    executable, budget = stand_in(tmp_path, 0.5), Budget(epochs=6, seeds=1)
    workdir = tmp_path / "grid"
    tasks = table5_tasks(workdir, budget, cells=CELLS[:1])
    directory = pathlib.Path(tasks[0].directory)
    sittings = directory / "sittings.jsonl"

    def first_training():
        if not sittings.exists():
            return None
        return json.loads(sittings.read_text().splitlines()[0])["pid"]

    thread, killed = kill_worker_after_first_epoch(
        first_training, lambda: epochs_in(directory / "history.json", "loss"))
    lines = []
    ray_runner.RayRunner(tasks, budget, str(workdir), cluster, executable=executable,
                         poll_seconds=0.1, echo=lines.append).run()
    thread.join()
    assert killed, "the cell finished before its worker could be killed"
    assert 1 <= killed["epochs"] < budget.epochs
    assert tasks[0].state == "finished", tasks[0].reason
    # The training died with its worker (no orphan kept writing the cell's folder) ...
    assert is_gone(killed["pid"])
    # ... and the task ran again and resumed after the epochs the killed sitting had finished.
    runs = [json.loads(line) for line in sittings.read_text().splitlines()]
    assert [run["after"] for run in runs] == [0, killed["epochs"]]
    history = json.loads((directory / "history.json").read_text())
    assert history["loss"] == [1.0 / (epoch + 1) for epoch in range(budget.epochs)]


@pytest.fixture
def python_sigint():
    """Python's SIGINT handler for the test. `_thread.interrupt_main()` runs SIGINT's handler,
    and a process started with SIGINT ignored (a background job of a shell script, e.g. a
    nohup'd suite) has none, so the simulated Ctrl-C would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_ctrl_c_stops_a_cell_on_ray_and_a_rerun_resumes_it(tmp_path, cluster):
    """Ctrl-C on the command stops the running task (it passes SIGINT on to its training, as
    the local runner does) and names it; the same command again resumes the cell."""
    executable, budget = stand_in(tmp_path, 0.5), Budget(epochs=12, seeds=1)
    workdir = tmp_path / "grid"
    tasks = table5_tasks(workdir, budget, cells=CELLS[:1])
    directory = pathlib.Path(tasks[0].directory)

    def interrupt_after_an_epoch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not epochs_in(directory / "history.json", "loss"):
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C raises in the command

    thread = threading.Thread(target=interrupt_after_an_epoch, daemon=True)
    thread.start()
    with pytest.raises(KeyboardInterrupt) as stopped:
        ray_runner.RayRunner(tasks, budget, str(workdir), cluster, executable=executable,
                             poll_seconds=0.1, echo=[].append, stop_seconds=30).run()
    thread.join()
    assert tasks[0].state == "interrupted", tasks[0].reason
    assert re.fullmatch(r"stopped after epoch ([1-9]|1[01]) of 12", tasks[0].reason)
    assert stopped.value.stopped == [f"{tasks[0].name} ({tasks[0].reason})"]
    pid = json.loads((directory / "sittings.jsonl").read_text().splitlines()[0])["pid"]
    assert is_gone(pid)  # stopped, not left training
    done = epochs_in(directory / "history.json", "loss")
    again = table5_tasks(workdir, budget, cells=CELLS[:1])
    ray_runner.RayRunner(again, budget, str(workdir), cluster, executable=executable,
                         poll_seconds=0.1, echo=[].append).run()
    assert again[0].state == "finished"
    runs = (directory / "sittings.jsonl").read_text().splitlines()
    assert [json.loads(line)["after"] for line in runs] == [0, done]


def test_a_training_started_for_a_task_dies_with_the_process_that_started_it(tmp_path):
    """Whatever kills a worker (Ray also stops a dead worker's process group), its training
    must not live on: the retried task would train the same cell beside it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from okddip_tf.reproduce import ray_runner\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "                         preexec_fn=ray_runner.child_setup(),\n"
        "                         start_new_session=True)\n"  # out of the parent's group
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n")], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not is_gone(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while not is_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = not is_gone(child)
    if survived:
        os.kill(child, signal.SIGKILL)  # the test's own orphan
    assert not survived


def test_cells_asking_more_than_any_node_has_are_refused(ray_address, cluster):
    del cluster  # connected: the check reads the cluster's nodes
    with pytest.raises(errors.ConfigError, match=r"no node of the Ray cluster at .* has the 64 "
                       r"CPUs and 0 GPUs a cell asks for \(its nodes: 2 CPUs and 0 GPUs\)"):
        ray_runner.Cluster(ray_address, cpus=64)


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(errors.DependencyError, match=re.escape('pip install -e ".[ray]"')):
        ray_runner.Cluster("local")


def test_reproduce_without_ray_imports_no_ray():
    """Ray is optional: the command and the runners load it only for --ray."""
    code = ("import sys, okddip_tf.cli, okddip_tf.reproduce, okddip_tf.reproduce.ray_runner; "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120, check=True)
    assert result.stdout.strip() == "False"


# --- real cells through the command line (slow) -------------------------------------------------

def reproduce_args(workdir, epochs, cells=CELLS):
    return ("reproduce", "--experiment=table5", f"--workdir={workdir}", f"--epochs={epochs}",
            "--seeds=1", "--smoke", f"--only={','.join(cells)}")


@pytest.mark.slow
def test_real_cells_on_ray_report_as_the_local_runner(tmp_path, tfds_data_dir, ray_address,
                                                      run_cli):
    del tfds_data_dir  # the cells read it (the cluster's workers have the tests' environment)
    on_ray = run_cli(*reproduce_args(tmp_path / "ray", 2), f"--ray={ray_address}",
                     "--cell_cpus=1", "--cell_gpus=0", timeout=900)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    assert on_ray.stdout.count("starting of 2 on Ray") == 3
    assert on_ray.stdout.count("finished 2 epochs") == 3
    local = run_cli(*reproduce_args(tmp_path / "local", 2), timeout=900)
    assert local.returncode == 0, local.stdout + local.stderr
    results = [json.loads((tmp_path / where / "results.json").read_text())
               for where in ("ray", "local")]
    assert [cell["state"] for cell in results[0]["cells"]].count("finished") == 3
    assert without_timing(results[0]) == without_timing(results[1])
    assert report_without_timing(tmp_path / "ray") == report_without_timing(tmp_path / "local")


def training_of(directory):
    """The pid of the `okddip train` process training in `directory`, or None."""
    wanted = f"--workdir={directory}".encode()
    for entry in pathlib.Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv and b"train" in argv:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_a_real_cell_whose_worker_is_killed_resumes_from_its_checkpoint(
        tmp_path, tfds_data_dir, ray_address):
    del tfds_data_dir
    epochs, workdir = 6, tmp_path / "grid"
    directory = workdir / manifest.EXPERIMENTS["table5"].cells[0].run.id / "seed0"
    # okddip train resumes from its last checkpoint (written after history.json each epoch).
    thread, killed = kill_worker_after_first_epoch(
        lambda: training_of(directory),
        lambda: epochs_in(directory / "checkpoints" / "state.json", "epochs_done"), timeout=600)
    command = subprocess.run(
        [sys.executable, "-m", "okddip_tf.cli", *reproduce_args(workdir, epochs, CELLS[:1]),
         f"--ray={ray_address}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    thread.join()
    assert command.returncode == 0, command.stdout + command.stderr
    assert killed, "the cell finished before its worker could be killed"
    assert 1 <= killed["epochs"] < epochs, killed
    assert is_gone(killed["pid"])
    log = (directory / "train.log").read_text()
    sittings = log.split("\n$ ")
    assert len(sittings) == 2, (killed, log)  # the first, killed, and the retried one
    resumed = re.search(r"Resuming \S+ after its (\d+) finished epoch\(s\)", sittings[1])
    assert resumed and int(resumed.group(1)) >= killed["epochs"], (killed, sittings[1])
    after = int(resumed.group(1))
    trained = [int(n) for n in re.findall(rf"^Epoch (\d+)/{epochs} ", sittings[1], re.M)]
    assert trained == list(range(after + 1, epochs + 1)), sittings[1]
    assert len(json.loads((directory / "history.json").read_text())["loss"]) == epochs
