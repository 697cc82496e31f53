"""`okddip tune` on several processes: KerasTuner's distributed search (okddip_tf.tune_cluster).

The roles and their flags are checked in milliseconds; the chief's `Leases` (lost workers' trials
requeued, waiting instead of stopping while others train) on a real KerasTuner oracle with a
stand-in clock; and a chief with two workers, three `okddip tune` processes on 127.0.0.1, runs a
smoke search on real CIFAR-100 whose results match a one-process search's. Killing a worker
mid-trial (slow tests): the chief finishes with the other worker, or with the killed one rerun.
"""

import json
import math
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from okddip_tf import config as base
from okddip_tf import tune_cluster, tuner
from okddip_tf.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "configs/cifar100_resnet32_tune.py:smoke"
WORKER_LINE = re.compile(r"^Worker (\w+): trial (\d+)$", re.MULTILINE)
TIMEOUT_S = 600


# --- roles ---------------------------------------------------------------------------------------

def test_flags_set_kerastuners_variables_and_win_over_the_environment():
    environ = {tune_cluster.ENV_TUNER_ID: "tuner7", tune_cluster.ENV_ORACLE_IP: "10.0.0.1",
               tune_cluster.ENV_ORACLE_PORT: "9000"}
    assert tune_cluster.environment("tuner1", "127.0.0.1:8000", environ) == {
        "KERASTUNER_TUNER_ID": "tuner1", "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": "8000"}
    assert tune_cluster.environment(None, None, environ)["KERASTUNER_TUNER_ID"] == "tuner7"
    assert tune_cluster.environment("", "", {}) == {}
    chief = tune_cluster.role(tune_cluster.environment("chief", "0.0.0.0:8000", {}))
    assert chief.is_chief and chief.address == "0.0.0.0:8000"
    assert not tune_cluster.role(environ).is_chief
    assert tune_cluster.role({}) is None


@pytest.mark.parametrize("tuner_id,oracle,message", [
    ("tuner0", "", r"--tuner_id=tuner0 needs the chief's address: --oracle=HOST:PORT"),
    ("", "127.0.0.1:8000", r"needs this process's id: --tuner_id=chief"),
    ("tuner0", "127.0.0.1", r"--oracle='127.0.0.1': give the chief's address as HOST:PORT"),
    ("tuner0", "host:99999", r"a port from 1 to 65535"),
    ("chief2", "127.0.0.1:8000", r"every id containing 'chief' for the chief"),
])
def test_a_wrong_role_says_what_to_give(tuner_id, oracle, message):
    with pytest.raises(ConfigError, match=message):
        tune_cluster.environment(tuner_id, oracle, {})


def test_worker_timeout_must_outlast_the_heartbeats():
    tune_cluster.check_worker_timeout(tune_cluster.MIN_WORKER_TIMEOUT_S)
    with pytest.raises(ConfigError, match=r"--worker_timeout=5: .* at least 15"):
        tune_cluster.check_worker_timeout(5)


def test_a_distributed_kd_search_needs_a_teacher_trained_before():
    config = base.paper_config("cifar100", "kd", "smoke")
    worker = tune_cluster.Role("tuner0", "127.0.0.1", 8000)
    with pytest.raises(ConfigError, match=r"every process would train the teacher .* "
                       r"--config=configs/cifar100_resnet32_baseline.py:smoke"):
        tuner.check_distributed(config, worker)
    tuner.check_distributed(config, None)  # one process trains it, as before
    config.kd.teacher = "runs/teacher"
    tuner.check_distributed(config, worker)


def test_cli_refuses_a_worker_without_the_chiefs_address_before_tensorflow(tmp_path, run_cli):
    result = run_cli("tune", f"--config={SMOKE}", f"--workdir={tmp_path / 'w'}",
                     "--tuner_id=tuner0", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "okddip tune: --tuner_id=tuner0 needs the chief's address" in result.stderr
    assert not (tmp_path / "w").exists()


# --- the chief's leases on a real oracle ----------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def kerastuner_oracle(directory, max_trials):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"),
                                           max_trials=max_trials, seed=1)
    oracle.hyperparameters.Float("x", 0.0, 1.0)
    oracle.verbose = 0
    oracle._set_project_dir(str(directory), "search")  # what a tuner does with its oracle
    return oracle


def leased_oracle(directory, max_trials, timeout=30.0):
    oracle = kerastuner_oracle(directory, max_trials)
    clock = Clock()
    leases = tune_cluster.Leases(oracle, timeout, clock)
    leases.install()
    return oracle, leases, clock


def end(oracle, trial, score):
    oracle.update_trial(trial.trial_id, {"score": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_a_lost_workers_trial_goes_to_the_next_worker_and_the_search_ends(tmp_path):
    oracle, leases, clock = leased_oracle(tmp_path, max_trials=3, timeout=50.0)
    first, second = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")
    assert (first.status, second.status) == ("RUNNING", "RUNNING")
    clock.now = 20.0
    oracle.get_trial(first.trial_id)  # tuner0's heartbeat; tuner1 stays silent
    end(oracle, first, 0.5)
    third = oracle.create_trial("tuner0")
    assert third.status == "RUNNING" and third.trial_id not in (first.trial_id,
                                                                 second.trial_id)
    clock.now = 40.0
    oracle.get_trial(third.trial_id)
    end(oracle, third, 0.25)
    # No new trial is left, but tuner1's may still come back or need a worker: tuner0 waits.
    assert oracle.create_trial("tuner0").status == "IDLE"
    assert not leases.finished()
    clock.now = 61.0  # tuner1 silent for 61 s > 50 s: lost, its trial goes to tuner0
    retried = oracle.create_trial("tuner0")
    assert (retried.status, retried.trial_id) == ("RUNNING", second.trial_id)
    assert "tuner1" not in oracle.tuner_ids
    end(oracle, retried, 0.75)
    assert not leases.finished()
    assert oracle.create_trial("tuner0").status == "STOPPED"
    assert leases.finished()
    assert sorted(t.status for t in oracle.trials.values()) == ["COMPLETED"] * 3
    assert oracle.get_best_trials(1)[0].trial_id == second.trial_id


def test_a_worker_rerun_in_time_gets_its_own_trial_back(tmp_path):
    oracle, leases, clock = leased_oracle(tmp_path, max_trials=2)
    first = oracle.create_trial("tuner1")
    clock.now = 10.0  # tuner1 was killed and rerun within the timeout
    again = oracle.create_trial("tuner1")
    assert (again.status, again.trial_id) == ("RUNNING", first.trial_id)
    assert oracle.create_trial("tuner0").trial_id != first.trial_id
    assert not leases.finished()


def test_a_lost_idle_worker_is_not_waited_for(tmp_path):
    oracle, leases, clock = leased_oracle(tmp_path, max_trials=1)
    only = oracle.create_trial("tuner0")
    assert oracle.create_trial("tuner1").status == "IDLE"  # then tuner1 dies, waiting
    clock.now = 25.0
    oracle.get_trial(only.trial_id)
    end(oracle, only, 1.0)
    assert oracle.create_trial("tuner0").status == "STOPPED"
    assert not leases.finished()  # tuner1 was told nothing yet
    clock.now = 40.0
    assert leases.finished() and not oracle.tuner_ids


def test_a_second_chief_on_the_port_says_it_cannot_listen(tmp_path):
    from okddip_tf.errors import InputError  # pylint: disable=import-outside-toplevel

    port = free_port()
    served, stand_ins = [], []
    for name in ("first", "second"):  # tuners, as far as `serve` uses them
        stand_ins.append(types.SimpleNamespace(oracle=kerastuner_oracle(tmp_path / name, 1),
                                               save=lambda: None))
    role = tune_cluster.Role(tune_cluster.CHIEF, "127.0.0.1", port)
    first = threading.Thread(target=lambda: served.append(
        tune_cluster.serve(stand_ins[0], role, verbose=0)), daemon=True)
    first.start()
    deadline = time.monotonic() + 60
    while not port_open(port):
        assert time.monotonic() < deadline and first.is_alive(), "the first chief never listened"
        time.sleep(0.1)
    with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use"):
        tune_cluster.serve(stand_ins[1], role, verbose=0)
    oracle = stand_ins[0].oracle  # the first chief's search ends: it stops serving
    trial = oracle.create_trial("tuner0")
    end(oracle, trial, 1.0)
    assert oracle.create_trial("tuner0").status == "STOPPED"
    first.join(timeout=60)
    assert served == [None] and not port_open(port)


def port_open(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- a chief and two workers ----------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tune(name, root, workdir, data_dir, port, *extra, log_name=None):
    """Starts `okddip tune` on the smoke search as `name` (chief, tuner0, ...); its output goes
    to root/<log_name or name>.log."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}  # gRPC must not route loopback through a proxy
    for variable in (tune_cluster.ENV_TUNER_ID, tune_cluster.ENV_ORACLE_IP,
                     tune_cluster.ENV_ORACLE_PORT):
        env.pop(variable, None)
    log_path = root / f"{log_name or name}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "okddip_tf.cli", "tune", f"--config={SMOKE}",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         "--config.data.train_examples=64", "--config.data.eval_examples=64",
         # Groups of 2 (the smallest OKDDip group): the least tracing per trial.
         "--config.tuner.num_students=()", "--config.model.num_students=2",
         f"--tuner_id={name}", f"--oracle=127.0.0.1:{port}", *extra],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return {"name": name, "process": process, "log": log, "path": log_path}


def output(run):
    return run["path"].read_text()


def finish(runs, timeout=TIMEOUT_S):
    """Waits for every run; kills them all at the first failure or the deadline, and fails."""
    deadline = time.monotonic() + timeout
    try:
        while any(run["process"].poll() is None for run in runs):
            failed = [run for run in runs if run["process"].poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                culprit = failed[0] if failed else runs[0]
                pytest.fail(f"{culprit['name']}: " + (
                    f"exit {culprit['process'].returncode}" if failed else "still running") +
                    f"; its output ends:\n{output(culprit)[-5000:]}")
            time.sleep(0.5)
    finally:
        for run in runs:
            if run["process"].poll() is None:
                run["process"].kill()
            run["process"].wait()
            run["log"].close()


def trials_run(*runs):
    """(worker, trial id) for every trial a worker announced, in order."""
    return [match.groups() for run in runs for match in WORKER_LINE.finditer(output(run))]


def load_config_file(path):
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("best_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def check_results(workdir, chief, trial_ids):
    """The chief's summary lists every trial, completed; best_config.py and
    best_hyperparameters.json are what a one-process search writes for its best trial."""
    table = output(chief).split("best first:\n", 1)[1].split("\nBest: trial")[0].splitlines()
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert sorted(rows) == sorted(trial_ids)
    assert all(row[-2] == "COMPLETED" and math.isfinite(float(row[-1])) for row in rows.values())
    written = json.loads((workdir / tuner.BEST_HYPERPARAMETERS).read_text())
    assert set(written) == {"trial_id", "objective", "direction", "score", "hyperparameters",
                            "epochs"}
    assert written["trial_id"] == table[2].split()[0]  # the table's first row: the best
    assert float(rows[written["trial_id"]][-1]) == pytest.approx(written["score"], abs=1e-4)
    expected = json.loads((workdir / tuner.SEARCH_CONFIG).read_text())
    for name, value in written["hyperparameters"].items():
        section, key = tuner.SEARCH_SPACE[name][0].split(".")
        expected[section][key] = value
    best = load_config_file(workdir / tuner.BEST_CONFIG)
    base.validate_config(best)
    assert json.loads(json.dumps(best.to_dict(), default=float)) == expected


def test_a_chief_and_two_workers_run_every_trial_once(tfds_data_dir, tmp_path):
    workdir, port = tmp_path / "search", free_port()
    runs = [tune(name, tmp_path, workdir, tfds_data_dir, port, "--config.train.verbose=0")
            for name in ("chief", "tuner0", "tuner1")]
    finish(runs)
    chief, *workers = runs
    ran = trials_run(*workers)
    assert sorted(trial for _, trial in ran) == ["0", "1"], ran  # every trial, each once
    assert not WORKER_LINE.search(output(chief))  # the chief trains nothing
    for worker in workers:
        assert "has no trial left for it" in output(worker)
        assert "best first" not in output(worker)  # only the chief sums up
    assert sorted(p.name for p in (workdir / tuner.PROJECT).glob("trial_*")) == [
        "trial_0", "trial_1"]
    check_results(workdir, chief, ["0", "1"])


def kill_mid_trial(run, root, timeout=TIMEOUT_S):
    """Kills `run` (SIGKILL) a few seconds into its first trial; returns that trial's id."""
    deadline = time.monotonic() + timeout
    while not trials_run(run):
        assert run["process"].poll() is None, output(run)[-3000:]
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    time.sleep(3)
    assert run["process"].poll() is None, "the trial ended before the kill"
    os.kill(run["process"].pid, signal.SIGKILL)
    run["process"].wait()
    run["log"].close()
    return trials_run(run)[0][1]


@pytest.mark.slow  # three processes, three trials, and a worker timeout to wait out
def test_the_chief_finishes_with_the_other_worker_when_one_is_killed(tfds_data_dir, tmp_path):
    workdir, port = tmp_path / "search", free_port()
    extra = ("--config.tuner.max_trials=3", "--config.train.verbose=0")
    chief = tune("chief", tmp_path, workdir, tfds_data_dir, port, *extra,
                 "--worker_timeout=30")  # 6 heartbeats: a loaded machine may delay one
    survivor = tune("tuner0", tmp_path, workdir, tfds_data_dir, port, *extra)
    victim = tune("tuner1", tmp_path, workdir, tfds_data_dir, port, *extra)
    try:
        lost = kill_mid_trial(victim, tmp_path)
    finally:
        if victim["process"].poll() is None:
            victim["process"].kill()
    finish([chief, survivor])
    assert "Worker tuner1 silent for" in output(chief)
    assert f"its trial {lost} goes to the next worker" in output(chief)
    survived = [trial for _, trial in trials_run(survivor)]
    assert lost in survived and sorted(survived) == ["0", "1", "2"], survived
    check_results(workdir, chief, ["0", "1", "2"])


@pytest.mark.slow  # three processes, three trials and a rerun worker
def test_a_killed_worker_rerun_continues_its_trial(tfds_data_dir, tmp_path):
    workdir, port = tmp_path / "search", free_port()
    extra = ("--config.tuner.max_trials=3", "--config.train.verbose=0")
    chief = tune("chief", tmp_path, workdir, tfds_data_dir, port, *extra,
                 "--worker_timeout=600")  # the rerun comes back before its trial is given away
    other = tune("tuner0", tmp_path, workdir, tfds_data_dir, port, *extra)
    victim = tune("tuner1", tmp_path, workdir, tfds_data_dir, port, *extra)
    lost = kill_mid_trial(victim, tmp_path)
    rerun = tune("tuner1", tmp_path, workdir, tfds_data_dir, port, *extra,  # the same command
                 log_name="tuner1_rerun")
    finish([chief, other, rerun])
    assert trials_run(rerun)[0] == ("tuner1", lost)  # first the trial it was killed in
    assert "Worker tuner1 silent for" not in output(chief)
    every = [trial for _, trial in trials_run(other)] + [trial for _, trial in trials_run(rerun)]
    assert sorted(every) == ["0", "1", "2"]  # the killed run's trial counted once, by the rerun
    check_results(workdir, chief, ["0", "1", "2"])
