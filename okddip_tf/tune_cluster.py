"""`okddip tune` on several machines: KerasTuner's distributed search, one chief and its workers.

KerasTuner runs one search over many processes when each has KERASTUNER_TUNER_ID ("chief" for
the process that serves the oracle; another id, e.g. tuner0, tuner1, for each worker) and
KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT (where the chief serves it, over gRPC); `okddip tune
--tuner_id=ID --oracle=HOST:PORT` sets them. The chief trains nothing: it hands out trials and
records their results in the workdir's search/; when the search is over it prints the summary and
writes best_config.py as a one-process search does (okddip_tf.tuner). A worker asks for a trial,
trains it, reports its score and asks again until the chief has none left.

What the chief adds to KerasTuner's own (`serve`, `Leases`):
- A worker reports that it is alive every HEARTBEAT_S seconds while it trains (a GetTrial of its
  trial, from a thread). A worker not heard from for `worker_timeout` seconds is lost: its trial
  goes back to the queue, ahead of new trials, for the next worker that asks, and the search no
  longer waits for that worker. Rerun with the same id, a lost worker asks again: it gets its own
  trial back if nobody has taken it yet, else the next one.
- A worker that the search has nothing for while other workers' trials still run waits (it asks
  again every POLL_S seconds) instead of leaving, so that it can take over a lost worker's trial.
  All workers stop when the last trial has ended.
- The chief stops serving once every worker it heard from has stopped (KerasTuner's own loop looks
  every 20 s and leaves its server running).

Importing this module imports neither KerasTuner nor TensorFlow (the command line checks its
flags with it before TensorFlow starts).
"""

import dataclasses
import os
import threading
import time

from okddip_tf import compat
from okddip_tf.errors import ConfigError, InputError

ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
CHIEF = "chief"
HEARTBEAT_S = 5.0  # a worker's "alive" while it trains
POLL_S = 1.0  # a waiting worker asks again, and the chief looks for lost workers, this often
WORKER_TIMEOUT_S = 60  # the default silence after which the chief gives a worker's trial away
MIN_WORKER_TIMEOUT_S = 3 * HEARTBEAT_S
# KerasTuner's trial states (keras_tuner.engine.trial.TrialStatus).
RUNNING, IDLE, STOPPED = "RUNNING", "IDLE", "STOPPED"


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's part in a distributed search: its tuner id and the chief's address."""

    tuner_id: str
    host: str
    port: int

    @property
    def is_chief(self):
        return self.tuner_id == CHIEF

    @property
    def address(self):
        return f"{self.host}:{self.port}"


def parse_address(text, where="--oracle"):
    """(host, port) of "HOST:PORT"; a ConfigError saying the form otherwise."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}={text!r}: give the chief's address as HOST:PORT, e.g. "
                          "127.0.0.1:8000 (a port from 1 to 65535).")
    return host, int(port)


def environment(tuner_id, oracle, environ):
    """KerasTuner's three variables for `--tuner_id` and `--oracle` (each, where given, wins over
    `environ`'s), checked; {} for a one-process search."""
    merged = {name: environ.get(name, "") for name in (ENV_TUNER_ID, ENV_ORACLE_IP,
                                                        ENV_ORACLE_PORT)}
    if tuner_id:
        merged[ENV_TUNER_ID] = tuner_id
    if oracle:
        host, port = parse_address(oracle)
        merged[ENV_ORACLE_IP], merged[ENV_ORACLE_PORT] = host, str(port)
    if role(merged) is None:
        return {}
    return merged


def role(environ=None):
    """This process's `Role` from KerasTuner's variables in `environ` (os.environ); None when
    none is set (a one-process search). Raises ConfigError on an incomplete or odd set."""
    environ = os.environ if environ is None else environ
    tuner_id, host, port = (environ.get(name, "") for name in (ENV_TUNER_ID, ENV_ORACLE_IP,
                                                               ENV_ORACLE_PORT))
    if not (tuner_id or host or port):
        return None
    if not tuner_id:
        raise ConfigError(f"A distributed search needs this process's id: --tuner_id={CHIEF} "
                          f"for the chief, --tuner_id=tuner0 (tuner1, ...) for each worker (or "
                          f"{ENV_TUNER_ID}).")
    if not (host and port):
        raise ConfigError(f"--tuner_id={tuner_id} needs the chief's address: --oracle=HOST:PORT "
                          f"(or {ENV_ORACLE_IP} and {ENV_ORACLE_PORT}), e.g. "
                          "--oracle=127.0.0.1:8000 on one machine.")
    host, port = parse_address(f"{host}:{port}", f"{ENV_ORACLE_IP}:{ENV_ORACLE_PORT}")
    if CHIEF in tuner_id and tuner_id != CHIEF:
        raise ConfigError(f"--tuner_id={tuner_id!r}: KerasTuner takes every id containing "
                          f"{CHIEF!r} for the chief; give the chief --tuner_id={CHIEF} and each "
                          "worker another id, e.g. tuner0, tuner1.")
    return Role(tuner_id, host, port)


def check_worker_timeout(seconds):
    if seconds < MIN_WORKER_TIMEOUT_S:
        raise ConfigError(f"--worker_timeout={seconds:g}: a worker reports every {HEARTBEAT_S:g} "
                          f"s while it trains, so give it at least {MIN_WORKER_TIMEOUT_S:g} s "
                          f"(default {WORKER_TIMEOUT_S}).")


# --- the chief -----------------------------------------------------------------------------------

class Leases:
    """The chief's record of when it last heard from each worker, and what it does about silence.

    `install` wraps the oracle's `create_trial` and `get_trial` (the RPCs workers ask and beat
    with); every method runs under the oracle's own lock (KerasTuner's `synchronized`), as the
    oracle's methods do, since the gRPC server calls them from its thread.

    Args:
      oracle: the search's KerasTuner oracle.
      timeout: seconds of silence after which a worker is lost.
      clock: seconds, monotonic (a test's stand-in may replace it).
    """

    def __init__(self, oracle, timeout, clock=time.monotonic):
        import keras_tuner as kt  # pylint: disable=import-outside-toplevel

        self.oracle, self.timeout, self.clock = oracle, timeout, clock
        self.heard = {}  # tuner id -> clock() when it last asked or beat
        self.over = False  # a worker has been told that the search has no trial left
        self._locked = kt.synchronized(lambda oracle, function, *args: function(*args))

    def install(self):
        create_trial, get_trial = self.oracle.create_trial, self.oracle.get_trial
        self.oracle.create_trial = lambda tuner_id: self._locked(
            self.oracle, self.create_trial, create_trial, tuner_id)
        self.oracle.get_trial = lambda trial_id: self._locked(
            self.oracle, self.get_trial, get_trial, trial_id)

    def create_trial(self, create_trial, tuner_id):
        """KerasTuner's `create_trial`, after lost workers' trials are requeued; "the search is
        over" becomes "wait" (IDLE) while other workers' trials still run."""
        self.heard[tuner_id] = self.clock()
        self.reclaim()
        trial = create_trial(tuner_id)
        if trial.status == STOPPED:
            if self.oracle.ongoing_trials:  # one of them may yet be lost and need a worker
                self.oracle.tuner_ids.add(tuner_id)  # create_trial forgot it
                trial.status = IDLE
            else:
                self.over = True
                self.heard.pop(tuner_id, None)
        return trial

    def get_trial(self, get_trial, trial_id):
        """KerasTuner's `get_trial`; from the worker training `trial_id`, it says it is alive."""
        for tuner_id, trial in self.oracle.ongoing_trials.items():
            if trial.trial_id == trial_id:
                self.heard[tuner_id] = self.clock()
        return get_trial(trial_id)

    def reclaim(self):
        """Requeues the trial of each worker silent for longer than the timeout; forgets them."""
        now = self.clock()
        for tuner_id in sorted(self.oracle.tuner_ids):
            silent = now - self.heard.setdefault(tuner_id, now)
            if silent <= self.timeout:
                continue
            self.oracle.tuner_ids.discard(tuner_id)
            del self.heard[tuner_id]
            trial = self.oracle.ongoing_trials.pop(tuner_id, None)
            if trial is None:
                print(f"Worker {tuner_id} silent for {silent:.0f} s: the search no longer waits "
                      "for it.", flush=True)
                continue
            compat.requeue_trial(self.oracle, trial.trial_id)
            self.oracle.save()
            print(f"Worker {tuner_id} silent for {silent:.0f} s: its trial {trial.trial_id} goes "
                  "to the next worker that asks.", flush=True)

    def finished(self):
        """Requeues lost workers' trials; whether the search is over and every worker told."""
        self._locked(self.oracle, self.reclaim)
        return self.over and not self.oracle.ongoing_trials and not self.oracle.tuner_ids


def serve(tuner, role_, worker_timeout=WORKER_TIMEOUT_S, verbose=1):
    """Serves `tuner`'s oracle at `role_.address` until the search is over and no worker is
    left (what KerasTuner's `Tuner.search` does on the chief, with `Leases`)."""
    from concurrent import futures  # pylint: disable=import-outside-toplevel

    import grpc  # pylint: disable=import-outside-toplevel

    servicer, add_to_server = compat.keras_tuner_oracle_service()
    oracle = tuner.oracle
    oracle.verbose = verbose  # KerasTuner's trial lines are the chief's
    leases = Leases(oracle, worker_timeout)
    leases.install()
    tuner.save()
    # No SO_REUSEPORT (gRPC's default on Linux): a second chief on the port must fail, not
    # share the workers with this one.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                         options=[("grpc.so_reuseport", 0)])
    add_to_server(servicer(oracle), server)
    try:
        bound = server.add_insecure_port(role_.address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise InputError(f"The chief cannot listen on {role_.address}: the port is in use or "
                         "the host is not one of this machine's addresses. Pick another "
                         "--oracle=HOST:PORT (0.0.0.0:PORT listens on every address).")
    server.start()
    print(f"Chief: serving the search at {role_.address}; start each worker with the same "
          f"command and --tuner_id=tuner0 (tuner1, ...) --oracle=<this host>:{role_.port}. A "
          f"worker silent for {worker_timeout:g} s is taken for lost.", flush=True)
    try:
        while not leases.finished():
            time.sleep(POLL_S)
    finally:
        server.stop(grace=POLL_S).wait()


# --- a worker ------------------------------------------------------------------------------------

class Worker:
    """A worker's side: announces each trial, beats while it trains, waits when told to.

    Use as a context manager around the worker's `tuner.search(...)`: it wraps the tuner's
    `OracleClient.create_trial` and runs the heartbeat thread.
    """

    def __init__(self, tuner, role_, interval=HEARTBEAT_S):
        self.client, self.role, self.interval = tuner.oracle, role_, interval
        self.trial_id = None  # the trial this worker trains, for the heartbeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="okddip-tune-heartbeat",
                                        daemon=True)

    def __enter__(self):
        create_trial = self.client.create_trial
        self.client.create_trial = lambda tuner_id: self.create_trial(create_trial, tuner_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.trial_id = None

    def create_trial(self, create_trial, tuner_id):
        trial = create_trial(tuner_id)
        self.trial_id = trial.trial_id if trial.status == RUNNING else None
        if trial.status == RUNNING:
            print(f"Worker {tuner_id}: trial {trial.trial_id}", flush=True)
        elif trial.status == IDLE:  # other workers' trials are running: ask again shortly
            time.sleep(POLL_S)
        return trial

    def _beat(self):
        import grpc  # pylint: disable=import-outside-toplevel

        while not self._stop.wait(self.interval):
            trial_id = self.trial_id
            if trial_id is None:
                continue
            try:
                self.client.get_trial(trial_id)
            except grpc.RpcError as error:  # the chief is away: it will reclaim or wait
                print(f"Worker {self.role.tuner_id}: no answer from the chief at "
                      f"{self.role.address} ({error.code().name}); training goes on.",
                      flush=True)
