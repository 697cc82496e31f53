"""Training as a library call: config -> data -> group model -> fit -> metrics in a workdir.

`train_and_evaluate(config, workdir)` is what `okddip train` runs. The workdir holds:
  config.json          the resolved config
  dataset_info.json    classes, class names, image shape and pixel statistics
  checkpoints/last.keras   the whole group (optimizer included) after the last finished epoch
  checkpoints/state.json   how many epochs last.keras finished (see okddip_tf.rundir)
  tensorboard/         train/ and validation/: each logged value once per split (event_log);
                       okddip/: diversity and the attention, per peer pair
  history.json         every logged value, per epoch
  timing.json          the wall seconds of each epoch
  metrics.json         final-epoch test metrics and the best epoch (labelled as selected on test),
                       epochs numbered from 1 as Keras prints them (read_metrics reads old files)

Running the same command again continues a killed run from its last checkpoint; with
`train.deterministic=True` it ends with the weights and history of a run never interrupted.
A workdir with a finished run is reported, not retrained; one with a different config is refused
(`train.resume=False` moves the old run into `<workdir>/replaced-*/` and starts over).
"""

import dataclasses
import os
import re
import textwrap

import keras
import numpy as np

from okddip_tf import callbacks as group_callbacks
from okddip_tf import atomic_files, builders, distribution, event_log, progress, rundir, teachers
from okddip_tf.config import validate_config
from okddip_tf.errors import InputError

# How metrics.json numbers epochs: as Keras prints them ("Epoch 3/3" is the third). Files without
# this mark numbered them from 0 (read_metrics converts them).
EPOCH_NUMBERING = "1-based"

# What metrics.json reports besides the method's number, read from the test split after each
# epoch: every student's accuracy, the ensembles and the diversities the group logs.
REPORTED = ("leader_accuracy", "peer_accuracy", "ensemble_accuracy", "student_accuracy",
            "student_ensemble_accuracy", "diversity", "student_diversity")


def take_images(dataset, count):
    """The first `count` images of a batched (images, labels) dataset, as a NumPy array.

    It reads the whole dataset: stopping early would throw away a cache being filled.
    """
    images, total = [], 0
    for batch, _ in dataset:
        if total < count:
            images.append(np.asarray(batch))
            total += len(images[-1])
    return np.concatenate(images)[:count]


def build_callbacks(config, group, workdir, eval_ds, history=None):
    """Progress, ramp-up (distilling methods), NaN guard, diversity logs, TensorBoard, checkpoints.

    The progress line (the loss, the method's accuracy, the time left: progress.ProgressLine)
    comes first, so an epoch's line is printed before other callbacks write about that epoch. The
    NaN guard comes before the history and checkpoint writers, so a non-finite epoch is never
    saved; the history is written before the checkpoint (see okddip_tf.rundir).
    """
    tensorboard_dir = os.path.join(workdir, "tensorboard")
    result = [progress.ProgressLine()]
    if group.distill_weight is not None:
        result.append(group_callbacks.DistillWeightRampup(**config.rampup))
    result.append(group_callbacks.NaNGuard())
    # Its attention image and per-pair diversity are written with tf.summary.
    if group.num_peers >= 2 and config.train.probe_images > 0 \
            and event_log.tensorflow_available():
        probe = take_images(eval_ds, config.train.probe_images)
        result.append(group_callbacks.DiversityLogger(probe, tensorboard_dir))
    result += [
        *event_log.tensorboard_callbacks(tensorboard_dir),
        rundir.HistoryWriter(os.path.join(workdir, "history.json"), history),
        rundir.EpochTimer(os.path.join(workdir, rundir.TIMING),
                           len((history or {}).get("loss", []))),
        rundir.GroupCheckpoint(os.path.join(workdir, "checkpoints"),
                               monitor=f"val_{group.method.reported}"),
    ]
    return result


def summarize(history, method):
    """metrics.json's content from the per-epoch history of a run validated on the test split.

    `method_accuracy` is the number the paper's tables report for `method` (OKDDip: the leader;
    DML, CL-ILR, ONE, Ind: the mean over students; KD: the student); `reporting` names the keys.
    Epochs are numbered as Keras prints them, from 1 (`epoch_numbering`; see read_metrics).
    """
    keys = [key for key in REPORTED if f"val_{key}" in history]
    keys += sorted((key[4:] for key in history if re.fullmatch(r"val_peer_\d+_accuracy", key)),
                   key=lambda key: int(key.split("_")[1]))
    reported = f"val_{method.reported}"
    epochs = len(history["loss"])
    best = int(np.argmax(history[reported]))

    def entry(index):
        return {"epoch": index + 1, "method_accuracy": history[reported][index],
                **{key: history[f"val_{key}"][index] for key in keys}}

    return {
        "epochs": epochs,
        "epoch_numbering": EPOCH_NUMBERING,
        "reporting": {"method": method.name, "method_accuracy": method.reported,
                      "ensemble": method.ensemble, "deployed": method.deployed},
        "final_epoch": entry(epochs - 1),
        "best_epoch_selected_on_test_split": {
            **entry(best),
            "note": f"Chosen by test-set {method.reported}, as the paper's code does; optimistic.",
        },
    }


def read_metrics(path):
    """A workdir's metrics.json, its epochs numbered from 1 whichever version wrote it.

    Files written before `epoch_numbering` was recorded numbered epochs from 0.
    """
    metrics = atomic_files.read_json(path)
    if metrics.get("epoch_numbering") != EPOCH_NUMBERING:
        for key in ("final_epoch", "best_epoch_selected_on_test_split"):
            if isinstance(metrics.get(key), dict) and "epoch" in metrics[key]:
                metrics[key] = {**metrics[key], "epoch": metrics[key]["epoch"] + 1}
        metrics["epoch_numbering"] = EPOCH_NUMBERING
    return metrics


def format_summary(metrics):
    """A small table of the final and best-epoch test metrics, saying which number is which."""
    final, best = metrics["final_epoch"], metrics["best_epoch_selected_on_test_split"]
    reporting = metrics["reporting"]
    keys = ["method_accuracy"] + [key for key in REPORTED if key in final]
    rows = [f"{'test split':<26}{'final (epoch %d)' % final['epoch']:>18}"
            f"{'best (epoch %d)*' % best['epoch']:>18}"]
    rows += [f"{key:<26}{final[key]:>18.4f}{best[key]:>18.4f}" for key in keys]
    rows += textwrap.wrap(
        f"method_accuracy is {reporting['method_accuracy']} for {reporting['method']!r} (the "
        f"paper's protocol); the ensemble it reports is {reporting['ensemble'] or 'none'}; "
        f"`okddip export` deploys {reporting['deployed']}.", progress.WIDTH,
        break_long_words=False, break_on_hyphens=False)
    rows.append("* selected on the test split, like the paper's code: an optimistic number.")
    return "\n".join(rows)


def finished_run(config, workdir, epochs_done, history, out_dir=None):
    """A workdir whose run has done every epoch: report it (into out_dir), retrain nothing."""
    if epochs_done > config.train.epochs:
        raise InputError(f"{workdir} holds a run of {epochs_done} epochs, more than "
                         f"train.epochs={config.train.epochs}: it cannot be shortened. Use a new "
                         "--workdir, or --config.train.resume=False to start over there.")
    print(f"{workdir} holds a finished run ({epochs_done} epochs): nothing to train. "
          "(A larger --config.train.epochs would continue it.)")
    metrics = summarize(history, builders.build_method(config))
    atomic_files.write_json(os.path.join(out_dir or workdir, "metrics.json"), metrics)
    print(format_summary(metrics))
    path = os.path.join(workdir, "checkpoints", rundir.LAST_CHECKPOINT)
    return keras.saving.load_model(path), history, metrics


def fit(group, config, workdir, datasets, initial_epoch, history):
    """Trains epochs initial_epoch .. train.epochs - 1; returns the whole run's history."""
    train_ds, eval_ds, steps_per_epoch = datasets
    callbacks = build_callbacks(config, group, workdir, eval_ds, history)
    try:
        group.fit(train_ds, validation_data=eval_ds, epochs=config.train.epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=config.train.verbose,
                  shuffle=False)  # the training dataset shuffles itself, per epoch
    except FloatingPointError as err:
        raise FloatingPointError(f"{err} {rundir.describe_last(workdir)}") from err
    writer = next(c for c in callbacks if isinstance(c, rundir.HistoryWriter))
    return writer.history


def train_and_evaluate(config, workdir):
    """Trains the configured group and writes everything into `workdir`.

    Resumes the run already in `workdir`, if any (see the module's docstring). Under
    MultiWorkerMirroredStrategy every worker runs this; only the chief writes into `workdir`
    (the others into a temporary folder they delete), and resuming reads the chief's workdir, so
    it must be on storage all workers share.

    Returns:
      (group, history dict of every epoch, metrics dict).
    """
    validate_config(config)
    strategy = builders.build_strategy(config)  # before any write, and before any op runs
    initial_epoch, history = rundir.prepare_run(workdir, config,
                                                       chief=distribution.is_chief(strategy))
    distribution.check_same_on_workers(strategy, initial_epoch,
                                       "the epochs finished in the workdir")
    with distribution.write_dir(workdir, strategy) as out_dir:
        if initial_epoch >= config.train.epochs:
            return finished_run(config, workdir, initial_epoch, history, out_dir)
        return run_training(config, workdir, out_dir, strategy, initial_epoch, history)


def run_training(config, workdir, out_dir, strategy, initial_epoch, history):
    """Trains epochs initial_epoch.. of the run in `workdir`, writing into `out_dir`."""
    distribution.set_determinism(config.train.seed, config.train.deterministic)
    atomic_files.write_json(os.path.join(out_dir, "config.json"), config.to_dict())
    train_ds, eval_ds, info = builders.load_data(config.data, seed=config.train.seed,
                                                 epochs=config.train.epochs,
                                                 initial_epoch=initial_epoch)
    atomic_files.write_json(os.path.join(out_dir, "dataset_info.json"), dataclasses.asdict(info))
    steps_per_epoch = info.num_train_examples // config.data.batch_size
    # The run's one method instance; a teacher it needs is located or trained first.
    method = builders.build_method(config, teachers.prepare(config, workdir, train_and_evaluate))
    group = builders.build_compiled_group(config, info, strategy, steps_per_epoch, method)
    rundir.check_disk_space(out_dir, group)
    if initial_epoch:
        with strategy.scope():
            rundir.restore(group, workdir)
        print(f"Resuming {workdir} after its {initial_epoch} finished epoch(s).")
    history = fit(group, config, out_dir, (train_ds, eval_ds, steps_per_epoch), initial_epoch,
                  history)
    metrics = summarize(history, group.method)
    atomic_files.write_json(os.path.join(out_dir, "metrics.json"), metrics)
    print(format_summary(metrics))
    if config.export.after_training and distribution.is_chief(strategy):
        export_leader(workdir)
    return group, history, metrics


def export_leader(workdir):
    """Exports the finished run's leader (SavedModel + TFLite) and prints where it went."""
    from okddip_tf.deploy import export  # TF-only and heavy: imported only when asked for

    report = export.export_workdir(workdir)
    print(f"Exported the leader to {report['directory']} (see export_report.json there).")
