"""Hyperparameter search with KerasTuner: what `okddip tune --config=FILE --workdir=DIR` runs.

The search space is the config's `tuner` section (see okddip_tf/config.py): a float dimension
is a (low, high) range, an integer one a tuple of choices, and () keeps the config's value. A
trial writes its values into a copy of the config and builds its method and group with the
builders `okddip train` uses (okddip_tf.builders: the same data sources, strategy and checks),
then trains the first `tuner.epochs` epochs of that run on `tuner.train_split`, scored by
`tuner.objective` on `tuner.eval_split` (by default a held-out tenth of the training split, so
the test split plays no part in the choice).

The workdir holds:
  search/                     KerasTuner's project: oracle.json and trial_*/ (trial.json, weights)
  search_config.json          the config the search runs with; a rerun must match it
  best_config.py              a config file for `okddip train`: the search config, best values
  best_hyperparameters.json   the best trial: id, objective, score, values
  tensorboard/<trial>/        each trial's scalars, and TensorBoard's HParams dashboard

Running the same command again resumes the search: finished trials are kept, a trial cut off
mid-way is run again, and a larger `tuner.max_trials` adds trials.

With KerasTuner's KERASTUNER_* variables set (`okddip tune --tuner_id=ID --oracle=HOST:PORT`), the
search runs on several processes (okddip_tf.tune_cluster): the chief serves the trials to the
workers and, when the search is over, prints the summary and writes the best config; a worker
trains the trials it is given and writes neither.
"""

import ast
import copy
import dataclasses
import difflib
import functools
import json
import math
import os
import tempfile
import textwrap

import keras
import keras_tuner as kt

from okddip_tf import callbacks as group_callbacks
from okddip_tf import atomic_files, builders, distribution, methods, rundir, teachers, train
from okddip_tf import progress, tune_cluster
from okddip_tf.config import validate_config
from okddip_tf.errors import ConfigError, DependencyError, InputError
from okddip_tf.metrics import GroupTrackers

ALGORITHMS = ("random", "hyperband", "bayesian")
PROJECT = "search"
SEARCH_CONFIG = "search_config.json"
BEST_CONFIG = "best_config.py"
BEST_HYPERPARAMETERS = "best_hyperparameters.json"
# Each searchable hyperparameter: the config key it sets, and how `config.tuner.<name>` reads.
# Methods add their own (their declarations' `tuner_knobs`, e.g. OKDDip's attention_dim).
COMMON_SPACE = {
    "temperature": ("model.temperature", "range"),
    "learning_rate": ("optim.learning_rate", "log"),
    "rampup_length": ("rampup.length", "choice"),
    "num_students": ("model.num_students", "choice"),
}
SEARCH_SPACE = {**COMMON_SPACE,
                **{knob.name: (knob.key, knob.kind) for knob in methods.tuner_knobs().values()}}
# Keys a resumed search may change: none changes what its finished trials computed.
RESUMABLE_CHANGES = ("tuner.max_trials", "train.epochs", "train.verbose", "train.resume",
                     "data.data_dir", "data.download")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: its name, the config key it sets, its kind and values."""

    name: str
    key: str
    kind: str  # range | log | choice
    values: tuple

    def declare(self, hp):
        """Declares it in `hp` (the first time) and returns the trial's value."""
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values))
        low, high = (float(value) for value in self.values)
        if low == high:
            return hp.Fixed(self.name, low)
        return hp.Float(self.name, low, high, sampling="log" if self.kind == "log" else "linear")


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What `search` returns: the tuner, the best trial and the files written for it."""

    tuner: kt.Tuner
    best_trial_id: str
    best_score: float
    best_values: dict
    best_config_path: str
    table: str


def unused_dimensions(config):
    """The searchable names model.method does not use (searching them would only add noise)."""
    method = methods.get_spec(config.model.method)
    own = {knob.name for knob in method.tuner_knobs}
    unused = set(SEARCH_SPACE) - set(COMMON_SPACE) - own
    if not method.uses_temperature:
        unused.add("temperature")
    if not method.distills:
        unused.add("rampup_length")
    if method.min_students == method.max_students:
        unused.add("num_students")
    return unused


def search_space(config):
    """The searched dimensions of `config.tuner`, checked; raises ValueError saying the fix."""
    unused = unused_dimensions(config)
    method = methods.get_spec(config.model.method)
    space = []
    for name, (key, kind) in SEARCH_SPACE.items():
        values = tuple(config.tuner[name] or ())
        if not values or name in unused:
            continue
        where = f"tuner.{name}={values!r}"
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise ConfigError(f"{where}: the values must be numbers.")
        if kind == "choice":
            if any(not isinstance(v, int) for v in values) or len(set(values)) != len(values):
                raise ConfigError(f"{where}: give distinct integer choices, e.g. (2, 3, 4), or () "
                                  "to keep the config's value.")
        elif len(values) != 2 or not values[0] <= values[1] or not all(map(math.isfinite, values)):
            raise ConfigError(f"{where}: give a range (low, high) with low <= high, or () to keep "
                              "the config's value.")
        if name == "num_students" and not all(
                method.min_students <= v <= method.max_students for v in values):
            raise ConfigError(f"{where}: model.method={config.model.method!r} takes between "
                              f"{method.min_students} and {method.max_students} students.")
        dimension = Dimension(name, key, kind, values)
        for extreme in (min(values), max(values)):  # the config's own checks, at both ends
            try:
                validate_config(with_values(config, {name: extreme}))
            except ValueError as error:
                raise ConfigError(f"{where} reaches {extreme!r}, which the config rejects: "
                                  f"{error}") from None
        space.append(dimension)
    return space


def with_values(config, values):
    """A copy of `config` with each searched hyperparameter's value written into its key."""
    config = copy.deepcopy(config)
    for name, value in values.items():
        section, key = SEARCH_SPACE[name][0].split(".")
        config[section][key] = value
    return config


def logged_metrics(config, space):
    """The names every trial's group logs (training and "val_"), whatever its group size."""
    method = builders.build_method(config)
    sizes = next((dim.values for dim in space if dim.name == "num_students"),
                 (config.model.num_students,))
    common = None
    for size in sizes:
        names = {metric.name for metric in
                 GroupTrackers(method.terms, method.num_peers(size), method.distills,
                               method.has_leader(size)).all()}
        names |= {f"val_{name}" for name in names}
        common = names if common is None else common & names
    return sorted(common)


def make_objective(config, space):
    """The KerasTuner objective for `tuner.objective`; a name the group never logs fails here.

    (KerasTuner itself would only fail every trial with a KeyError.)
    """
    name = config.tuner.objective
    valid = logged_metrics(config, space)
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"tuner.objective={name!r} is not a metric the group logs.{hint} Valid "
                          f"objectives for model.method={config.model.method!r}: "
                          f"{', '.join(valid)}.")
    direction = "min" if name.endswith(("loss", "_ce", "_kd")) else "max"
    return kt.Objective(name, direction)


def check_tuner_config(config):
    """Checks the `tuner` section's own settings before anything loads."""
    tuner_config = config.tuner
    if tuner_config.algorithm not in ALGORITHMS:
        raise ConfigError(f"Unknown tuner.algorithm {tuner_config.algorithm!r}; choose one of "
                          f"{', '.join(ALGORITHMS)}.")
    checks = [
        (tuner_config.max_trials >= 1, "tuner.max_trials must be >= 1"),
        (tuner_config.epochs >= 1, "tuner.epochs must be >= 1"),
        (tuner_config.executions_per_trial >= 1, "tuner.executions_per_trial must be >= 1"),
        (tuner_config.hyperband_factor >= 2, "tuner.hyperband_factor must be >= 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"Invalid config: {message}.")
    if config.data.source != "tfds" and "[" in (tuner_config.train_split or "") + (
            tuner_config.eval_split or ""):
        raise ConfigError("tuner.train_split and tuner.eval_split slice tfds splits (e.g. "
                          "'train[:90%]'); for data.source='folder' name two subfolders, for "
                          "data.source='npz' two splits of the .npz, or set both to '' to use "
                          "data.train_split and data.eval_split.")
    if tuner_config.algorithm == "bayesian":
        try:
            import scipy  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            import sklearn  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError as error:
            raise DependencyError("tuner.algorithm='bayesian' needs scipy and scikit-learn: "
                                  "pip install 'keras-tuner[bayesian]'.") from error


def trial_data_config(config):
    """config.data with the tuner's splits: what `data.load_datasets` loads for the trials."""
    data_config = config.data.to_dict()
    for split in ("train_split", "eval_split"):
        if config.tuner[split]:
            data_config[split] = config.tuner[split]
    return data_config


class OKDDipHyperModel(kt.HyperModel):
    """One trial's group, built and trained the way `okddip train` builds and trains it.

    Args:
      config: the search's config; its `tuner` section holds the space and `tuner.epochs`.
      info: the `DatasetInfo` of the trials' data.
      steps_per_epoch: training steps per epoch (the learning-rate drops count them).
      prepared: method options the search prepared once (okddip_tf.teachers: KD's teacher).
    """

    def __init__(self, config, info, steps_per_epoch, prepared=None):
        super().__init__(name="okddip")
        self.config, self.info, self.steps_per_epoch = config, info, steps_per_epoch
        self.prepared = dict(prepared or {})
        self.space = search_space(config)

    def declare_hyperparameters(self, hp):
        for dimension in self.space:
            dimension.declare(hp)

    def trial_config(self, hp):
        """The config a trial trains: the search config with hp's values, tuner.epochs long."""
        config = with_values(self.config, {dim.name: dim.declare(hp) for dim in self.space})
        config.train.epochs = self.config.tuner.epochs
        return config

    def build(self, hp):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        config = self.trial_config(hp)
        validate_config(config)
        # KerasTuner enters the strategy's scope around build(); the builders enter it again.
        group = builders.build_compiled_group(config, self.info, tf.distribute.get_strategy(),
                                              self.steps_per_epoch,
                                              builders.build_method(config, self.prepared))
        # Every layer built before KerasTuner loads a trial's weights into it.
        group(keras.ops.zeros((1, *self.info.example_shape), self.info.input_dtype))
        return group

    def fit(self, hp, model, *args, **kwargs):
        """model.fit with the trial's ramp-up and the NaN guard ahead of KerasTuner's callbacks.

        A trial whose loss turns NaN is recorded as failed (KerasTuner then moves on).
        """
        config = self.trial_config(hp)
        own = [group_callbacks.NaNGuard()]
        if model.distill_weight is not None:
            own.insert(0, group_callbacks.DistillWeightRampup(**config.rampup))
        kwargs["callbacks"] = own + list(kwargs.get("callbacks") or [])
        initial_epoch = kwargs.get("initial_epoch", 0)
        if initial_epoch:  # Hyperband continues a trial's weights: resume the step schedule too
            model.optimizer.iterations.assign(initial_epoch * self.steps_per_epoch)
        try:
            return model.fit(*args, **kwargs)
        except FloatingPointError as error:
            raise kt.errors.FailedTrialError(str(error)) from error


def make_tuner(config, hypermodel, objective, workdir, strategy=None):
    """The configured KerasTuner tuner, reloading the search already in `workdir` if any."""
    tuner_config = config.tuner
    common = dict(
        hypermodel=hypermodel, objective=objective,
        seed=config.train.seed + 1,  # KerasTuner draws a random seed for 0
        executions_per_trial=tuner_config.executions_per_trial, directory=workdir,
        project_name=PROJECT, overwrite=False, distribution_strategy=strategy)
    if tuner_config.algorithm == "random":
        return kt.RandomSearch(max_trials=tuner_config.max_trials, **common)
    if tuner_config.algorithm == "hyperband":
        return kt.Hyperband(max_epochs=tuner_config.epochs, factor=tuner_config.hyperband_factor,
                            **common)
    return kt.BayesianOptimization(max_trials=tuner_config.max_trials, **common)


def check_same_search(workdir, config):
    """Refuses to resume a search of a different config; records the config of this one."""
    path = os.path.join(workdir, SEARCH_CONFIG)
    saved = atomic_files.read_json(path)
    current = json.loads(json.dumps(config.to_dict(), default=float))
    if saved is not None and os.path.isdir(os.path.join(workdir, PROJECT)):
        old, new = rundir.flatten(saved), rundir.flatten(current)
        keys = sorted((old.keys() | new.keys()) - set(RESUMABLE_CHANGES))
        differences = [f"{key}: {old.get(key, '<absent>')!r} there, "
                       f"{new.get(key, '<absent>')!r} now"
                       for key in keys if old.get(key, "<absent>") != new.get(key, "<absent>")]
        if differences:
            raise InputError(
                f"{workdir} holds a search with a different config ({'; '.join(differences[:8])})"
                ", so it cannot be resumed: its trials measured something else. Use a new "
                "--workdir (a resumed search may change only "
                f"{', '.join(RESUMABLE_CHANGES)}).")
    atomic_files.write_json(path, current)


def check_distributed(config, role):
    """What a search on several processes cannot do: train KD's teacher in every process."""
    method = methods.get_spec(config.model.method)
    if role is not None and method.needs_teacher and not methods.options_from_config(
            config)["teacher"]:
        raise ConfigError(
            f"model.method={config.model.method!r} in a distributed search: every process "
            "would train the teacher into the same workdir at once. Train it first (okddip "
            f"train --config={methods.options_from_config(config)['teacher_config']} "
            "--workdir=DIR) and give every process --config.kd.teacher=DIR.")


def search(config, workdir, worker_timeout=tune_cluster.WORKER_TIMEOUT_S):
    """Runs (or resumes) the search in `workdir`, writes the best config and prints a summary.

    With KerasTuner's KERASTUNER_* variables set this process is the chief or a worker of a
    distributed search (okddip_tf.tune_cluster); the chief gives a worker silent for
    `worker_timeout` seconds up for lost.

    Returns:
      A `SearchResult`; None on a worker of a distributed search (the chief writes the results).
    """
    role = tune_cluster.role()
    validate_config(config)
    check_tuner_config(config)
    check_distributed(config, role)
    if role is not None and role.is_chief:
        tune_cluster.check_worker_timeout(worker_timeout)
    space = search_space(config)
    skipped = sorted(name for name in unused_dimensions(config) if config.tuner[name])
    if skipped:
        print(f"Not searched: {', '.join(skipped)} (model.method={config.model.method!r} does "
              "not use them).")
    objective = make_objective(config, space)
    atomic_files.check_writable(workdir)
    check_same_search(workdir, config)
    distribution.set_determinism(config.train.seed, config.train.deterministic)
    strategy = builders.build_strategy(config)
    # epochs=None: each pass over the training data is a new epoch (every fit is one trial's).
    train_ds, eval_ds, info = builders.load_data(trial_data_config(config), seed=config.train.seed,
                                                 epochs=None)
    prepared = teachers.prepare(config, workdir, train.train_and_evaluate)
    hypermodel = OKDDipHyperModel(config, info, info.num_train_examples // config.data.batch_size,
                                  prepared)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    default = strategy is tf.distribute.get_strategy()
    tuner = make_tuner(config, hypermodel, objective, workdir, None if default else strategy)
    print(f"Search in {workdir}: {config.tuner.algorithm}, trials of up to {config.tuner.epochs} "
          f"epoch(s) each; KerasTuner announces each trial (train.verbose >= 1).", flush=True)
    if role is not None and role.is_chief:
        tune_cluster.serve(tuner, role, worker_timeout, verbose=config.train.verbose)
        return finish(tuner, config, workdir, space)
    run = functools.partial(
        tuner.search, train_ds, validation_data=eval_ds, epochs=config.tuner.epochs,
        verbose=config.train.verbose, shuffle=False,  # the dataset shuffles itself
        callbacks=[keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
                   progress.ProgressLine()])  # as `okddip train` shows it
    if role is None:
        run()
        return finish(tuner, config, workdir, space)
    with tune_cluster.Worker(tuner, role):
        run()
    print(f"Worker {role.tuner_id}: the search has no trial left for it. The chief "
          f"({role.address}) prints the summary and writes {BEST_CONFIG} when the last trial "
          "ends.", flush=True)
    return None


def ranked_trials(oracle):
    """Every trial: finished ones best first, then the others in id order."""
    sign = -1.0 if oracle.objective.direction == "max" else 1.0

    def rank(trial):
        scored = finished(trial)
        return (not scored, sign * trial.score if scored else 0.0, trial.trial_id)

    return sorted(oracle.trials.values(), key=rank)


def finished(trial):
    return (trial.status == "COMPLETED" and trial.score is not None
            and math.isfinite(trial.score))


def format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(trials, space, objective, epochs):
    """The summary table: trial id, values, epochs trained, status, score; in `trials`' order.

    `epochs` is what a trial trains unless Hyperband gave it fewer.
    """
    names = [dim.name for dim in space]
    header = ["trial", *names, "epochs", "status", objective.name]
    rows = []
    for trial in trials:
        values = trial.hyperparameters.values
        epochs = values.get("tuner/epochs", epochs)
        score = format_value(float(trial.score)) if finished(trial) else "-"
        rows.append([trial.trial_id, *(format_value(values.get(name, "")) for name in names),
                     str(epochs), trial.status, score])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def python_literal(value):
    """`repr(value)`, checked to read back as the same value (lists become tuples)."""
    if isinstance(value, list):
        value = tuple(value)
    text = repr(value)
    if ast.literal_eval(text) != value:
        raise ValueError(f"Cannot write {value!r} into a config file.")
    return text


def config_assignments(tree, prefix="config"):
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines += config_assignments(value, f"{prefix}.{key}")
        else:
            lines.append(f"    {prefix}.{key} = {python_literal(value)}")
    return lines


def best_config_source(config, trial, values, objective):
    """The text of best_config.py: a config file setting every key of `config`."""
    chosen = ", ".join(f"{name}={format_value(value)}" for name, value in values.items())
    epochs = trial.hyperparameters.values.get("tuner/epochs", config.tuner.epochs)
    about = textwrap.wrap(
        f"The search's config with the trial's values ({chosen or 'none searched'}). The "
        f"trial trained {epochs} epoch(s) on tuner.train_split; this config trains "
        f"train.epochs={config.train.epochs} epochs on data.train_split, the search config's "
        "full run. Written by okddip_tf.tuner; `:smoke` gives the seconds-long variant.", 96)
    return "\n".join([
        f'"""The best trial of an `okddip tune` search: trial {trial.trial_id}, '
        f"{objective.name} = {float(trial.score):.4f}.",
        "",
        f"    okddip train --config={BEST_CONFIG} --workdir=DIR",
        "",
        *about,
        '"""',
        "",
        "from okddip_tf import config as common",
        "",
        "",
        "def get_config(arg=None):",
        "    args = common.parse_arg(arg, smoke=False)",
        "    config = common.get_base_config()",
        *config_assignments(config.to_dict()),
        '    return common.apply_smoke(config) if args["smoke"] else config',
        "",
    ])


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def finish(tuner, config, workdir, space):
    """Prints the summary table and writes the best trial's config and values."""
    oracle = tuner.oracle
    trials = ranked_trials(oracle)
    table = format_table(trials, space, oracle.objective, config.tuner.epochs)
    print(f"\nSearch in {workdir}: {len(trials)} trial(s), objective {oracle.objective.name} "
          f"({oracle.objective.direction}), best first:\n{table}")
    if not trials or not finished(trials[0]):
        failures = [f"trial {t.trial_id}: {(t.message or t.status).strip().splitlines()[-1]}"
                    for t in trials]
        raise RuntimeError(f"No trial of the search in {workdir} finished with a score. "
                           f"{'; '.join(failures) or 'No trial ran.'}")
    best = trials[0]
    values = {dim.name: best.hyperparameters.values[dim.name] for dim in space}
    best_config = with_values(config, values)
    validate_config(best_config)
    config_path = os.path.join(workdir, BEST_CONFIG)
    write_text(config_path, best_config_source(best_config, best, values, oracle.objective))
    atomic_files.write_json(os.path.join(workdir, BEST_HYPERPARAMETERS), {
        "trial_id": best.trial_id, "objective": oracle.objective.name,
        "direction": oracle.objective.direction, "score": float(best.score),
        "hyperparameters": values,
        "epochs": best.hyperparameters.values.get("tuner/epochs", config.tuner.epochs)})
    print(f"Best: trial {best.trial_id} ({oracle.objective.name} = {float(best.score):.4f}). "
          f"Train it in full with\n    okddip train --config={config_path} --workdir=DIR")
    return SearchResult(tuner=tuner, best_trial_id=best.trial_id, best_score=float(best.score),
                        best_values=values, best_config_path=config_path, table=table)
