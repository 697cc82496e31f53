"""`okddip reproduce`: the paper's tables and figures at a stated budget, beside the paper's numbers.

    okddip reproduce --experiment=table2 --workdir=runs/table2 --epochs=60 --seeds=2

manifest.py lists the experiments (Tables 1-6; Figures 2, 3) and every cell's run (Table 3's
ImageNet cells are listed as not available until imagenet2012 is prepared for tfds);
budget.py scales the paper's schedule to --epochs; runner.py trains each cell as an `okddip train`
workdir under the experiment's workdir (resumable; finished cells are skipped), ray_runner.py
runs the same cells as Ray tasks on a cluster (--ray); report.py and
figures.py write report.md, results.json and figures/*.png there. Several experiments given the
same workdir share their common runs (Table 4 and Figure 2 read Table 2's). `prior_results`
names an earlier report's results.json (same experiment and budget) whose seeds stand in for
seeds the workdir has not finished (e.g. a seed 0 whose run folders are gone).

`Budget(epochs=None)` trains 2 epochs for a smoke run and the paper's 300 otherwise.
"""

import os

from okddip_tf.errors import ConfigError
from okddip_tf.reproduce import budget as budgets
from okddip_tf.reproduce import figures, manifest, ray_runner, report, runner

Budget = budgets.Budget


def selection(name, only=None):
    """(the experiment called `name`, its cells that `only` keeps); a clear error for neither."""
    experiment = manifest.get_experiment(name)
    selected = manifest.select(experiment, only)
    if not selected:
        raise ConfigError(f"--only={only!r} matches no cell of {experiment.name}; it matches a "
                          "cell's row, column, dataset, backbone, method or run id, e.g. "
                          "--only=resnet32.")
    return experiment, selected


def build_report(experiment, workdir, budget, selected=None, echo=print, report_dir=None,
                 prior_results=None):
    """Writes report.md, results.json and figures/ for `experiment` into `report_dir`.

    `report_dir` defaults to the experiment's `workdir`, where the cells' runs are read;
    `prior_results` is an earlier report's results.json to take missing seeds from.
    """
    report_dir = report_dir or workdir
    results = report.collect(experiment, workdir, budget, selected, prior=prior_results)
    names, note = figures.draw(results, os.path.join(report_dir, "figures"))
    path = report.write(results, report_dir, names, note)
    figures_drawn = budgets.counted(len(names), "figure")
    echo(f"Report: {path}, with {figures_drawn}." + (f" {note}" if note else ""))
    return results


def trained_seeds(budget):
    """"3 seeds", or with --train_seeds "2 seeds (1, 2 of 0 .. 2)": the seeds this run trains."""
    text = budgets.counted(len(budget.trained_seeds), "seed")
    if budget.train_seeds:
        text += f" ({', '.join(map(str, budget.trained_seeds))} of 0 .. {budget.seeds - 1})"
    return text


def reproduce(experiment, workdir, budget, only=None, parallel=1, report_only=False,
              report_dir=None, echo=print, prior_results=None, cluster=None, **runner_options):
    """Trains what is missing of `experiment` (unless report_only), then writes its report
    (into `report_dir`, by default `workdir`), with the seeds the workdir lacks taken from
    `prior_results` (an earlier results.json of the same experiment and budget) if given.

    `cluster` (a ray_runner.Cluster) runs the cells as Ray tasks there instead of `parallel`
    at a time on this machine; the report is the same.

    Returns (results dict, tasks); a task's `state` says whether it finished or failed.
    """
    experiment, selected = selection(experiment, only)
    if prior_results:  # refused before any training, not after hours of it
        report.load_prior(prior_results, experiment, budget)
    runs = [run for run in experiment.runs() if any(cell.run == run or cell.run.teacher == run
                                                   for cell in selected)]
    datasets = sorted({run.dataset for run in runs})
    if budget.npz and len(datasets) > 1:
        raise ConfigError(f"--npz gives every cell one dataset, but the selected cells train on "
                          f"{' and '.join(datasets)}: keep one with --only (e.g. "
                          f"--only={datasets[-1]}), and give each its own --npz and --workdir.")
    tasks = runner.plan(runs, budget, workdir)
    echo(f"{experiment.name}: {len(selected)} of {len(experiment.cells)} cells, "
         f"{budgets.counted(len(runs), 'run')} x {trained_seeds(budget)} = "
         f"{budgets.counted(len(tasks), 'training')} in {workdir}. "
         f"Budget: {budget.describe(experiment.schedule)}.")
    if not report_only and cluster is None:
        runner.Runner(tasks, budget, workdir, parallel=parallel, echo=echo,
                      **runner_options).run()
    elif not report_only:
        echo(cluster.describe())
        ray_runner.RayRunner(tasks, budget, workdir, cluster, echo=echo, **runner_options).run()
    return build_report(experiment, workdir, budget, selected, echo, report_dir,
                        prior_results), tasks
