"""The paper's experiments as data: every cell's run (the config it trains) and the paper's number.

A `Run` is one `okddip train` config without its budget: dataset, backbone, method, group size,
sharing and method options. A `Cell` is one number of a table or one point of a figure: the run
that produces it, which logged accuracy it reads (the method's number, or its ensemble's) and
the paper's value. Cells of one experiment that need the same training share one run (Table 4
reads the ensembles of Table 2's runs).

The paper's numbers are top-1 error rates in %, mean ± std of 3 runs, from Chen et al., "Online
Knowledge Distillation with Diverse Peers", AAAI 2020: Tables 1, 2, 3, 4, 5 and 6 (Tables 3 and
4 give no std). Figures 2 and 3 print no numbers; Figure 3's 4-student points are Table 2's.
Table 3's ImageNet-2012 cells need `imagenet2012` prepared for tfds (a manual download);
without it they are listed as not available, with what to prepare.
"""

import dataclasses
import glob
import os
from typing import Optional

from okddip_tf import methods
from okddip_tf.config import authors_dropout
from okddip_tf.errors import ConfigError

PAPER = "Chen et al., AAAI 2020"
IMAGENET = "imagenet2012"
# The architectures of Tables 1 and 2: the paper's name and okddip_tf's backbone.
ARCHITECTURES = {
    "DenseNet-40-12": "densenet40_12",
    "ResNet-32": "resnet32",
    "VGG-16": "vgg16",
    "ResNet-110": "resnet110_bottleneck",
    "WRN-20-8": "wrn20_8_bottleneck",
}
# The methods of Tables 1 and 2, in the paper's column order: (column, method, sharing).
# Ind, CL-ILR and ONE are the authors' branch-based models; DML trains 4 separate networks.
COMPARISON = (
    ("Baseline", "baseline", "branch"),
    ("Ind", "independent", "branch"),
    ("DML", "dml", "network"),
    ("CL-ILR", "cl_ilr", "branch"),
    ("ONE", "one", "branch"),
    ("OKDDip (network)", "okddip", "network"),
    ("OKDDip (branch)", "okddip", "branch"),
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training config of the paper's recipe, before the budget (epochs, seed) is applied.

    `options` are (config key, value) pairs set with --config.<key>=<value>, e.g.
    (("okddip.attention", "random"),). `teacher` is the run whose model teaches a KD run, trained
    at the same budget and seed.
    """

    dataset: str
    backbone: str
    method: str
    sharing: str = "branch"
    num_students: int = 4
    options: tuple = ()
    teacher: Optional["Run"] = None

    @property
    def single(self):
        """One network (Baseline, KD): sharing and group size do not apply."""
        spec = methods.SPECS.get(self.method)
        return spec is not None and spec.max_students == 1

    @property
    def id(self):
        """The run's folder name, e.g. cifar100_resnet32_okddip_branch_attention-random."""
        parts = [self.dataset, self.backbone, self.method]
        if not self.single:
            parts.append(self.sharing)
            if self.num_students != 4:
                parts.append(f"m{self.num_students}")
        parts += [f"{key.split('.')[-1]}-{value}" for key, value in self.options]
        return "_".join(parts)

    @property
    def schedule(self):
        """The paper's schedule the budget scales for this run (okddip_tf.reproduce.budget)."""
        return "imagenet" if self.dataset == IMAGENET else "cifar"

    @property
    def config_arg(self):
        """The argument of configs/paper.py that builds this run's config."""
        return (f"dataset={self.dataset},method={self.method},backbone={self.backbone},"
                f"students={self.num_students},sharing={self.sharing}")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One number of the paper: a row and column of a table, or a point or curve of a figure.

    `metric` is "method" (the method's reported accuracy: metrics.json's method_accuracy),
    "ensemble" (its ensemble's accuracy, selected on its own best epoch as the authors' Table 4
    was) or "diversity" (Figure 2's per-epoch peer diversity). `paper` is (error %, std or None).
    """

    row: str
    column: str
    run: Run
    paper: Optional[tuple] = None
    metric: str = "method"
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper: its cells in the paper's layout."""

    name: str
    title: str
    kind: str  # table | diversity (a curve per cell) | group_size (error against m)
    rows: tuple
    columns: tuple
    cells: tuple
    note: str = ""
    row_label: str = "Network"  # what the rows are

    @property
    def schedule(self):
        """The paper's schedule its runs follow: "imagenet" (Table 3) or "cifar"."""
        return self.cells[0].run.schedule

    def runs(self):
        """The distinct runs of its cells, teachers first, in the order of the cells."""
        ordered = []
        for cell in self.cells:
            for run in (cell.run.teacher, cell.run):
                if run is not None and run not in ordered:
                    ordered.append(run)
        return ordered


def paper_run(dataset, backbone, method, sharing="branch", num_students=4, options=()):
    """A `Run` with the authors' architecture settings its backbone has an option for.

    VGG-16: dropout 0.5 in the authors' branch-based models and 0.0 for one network and for
    network-based groups (`okddip_tf.config.authors_dropout`), set explicitly so the run's
    command and folder name say it.
    """
    if backbone == "vgg16":
        spec = methods.SPECS.get(method)
        students = 1 if spec is not None and spec.max_students == 1 else num_students
        options = (("model.dropout", authors_dropout(sharing, students)),) + tuple(options)
    return Run(dataset, backbone, method, sharing, num_students, tuple(options))


def comparison_table(name, dataset, numbers):
    """Table 1 or 2: every architecture x the 7 comparison columns."""
    cells = []
    for row, values in numbers.items():
        for (column, method, sharing), value in zip(COMPARISON, values):
            run = paper_run(dataset, ARCHITECTURES[row], method, sharing)
            note = ("The authors share one third dense block between the branches; okddip_tf "
                    "gives each branch its own." if row.startswith("DenseNet") and
                    sharing == "branch" and method != "baseline" else "")
            cells.append(Cell(row, column, run, value, note=note))
    label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
    return Experiment(
        name, f"Top-1 error (%) on {label}, 4 students", "table", tuple(numbers),
        tuple(column for column, _, _ in COMPARISON), tuple(cells),
        "Baseline: one network. DML: 4 networks. Ind, CL-ILR, ONE: 4 branches. The methods "
        "report the mean of their students' errors, OKDDip its leader's.")


TABLE1 = comparison_table("table1", "cifar10", {
    "DenseNet-40-12": [(6.87, .02), (6.97, .03), (6.50, .02), (7.02, .08), (6.85, .15),
                       (5.94, .05), (6.48, .12)],
    "ResNet-32": [(6.34, .03), (5.99, .15), (6.18, .05), (6.06, .07), (5.94, .06), (5.62, .07),
                  (5.58, .08)],
    "VGG-16": [(6.12, .15), (6.03, .01), (5.94, .04), (6.22, .10), (6.16, .08), (5.88, .04),
               (5.87, .03)],
    "ResNet-110": [(5.46, .02), (4.95, .02), (5.68, .03), (4.88, .12), (5.02, .04), (4.54, .07),
                   (4.56, .11)],
    "WRN-20-8": [(5.27, .06), (5.35, .02), (5.04, .08), (5.12, .16), (5.29, .02), (4.84, .07),
                 (5.06, .04)],
})

TABLE2 = comparison_table("table2", "cifar100", {
    "DenseNet-40-12": [(28.97, .23), (29.20, .09), (26.64, .17), (28.61, .12), (28.76, .18),
                       (26.10, .03), (28.34, .02)],
    "ResNet-32": [(28.76, .08), (27.84, .05), (26.47, .26), (27.44, .05), (26.50, .13),
                  (25.40, .08), (25.63, .14)],
    "VGG-16": [(26.19, .12), (25.81, .18), (25.33, .03), (25.62, .11), (25.63, .03),
               (24.88, .06), (25.15, .19)],
    "ResNet-110": [(24.12, .20), (23.54, .15), (22.50, .11), (21.56, .09), (21.67, .12),
                   (21.09, .17), (21.14, .14)],
    "WRN-20-8": [(22.50, .44), (21.85, .12), (20.21, .11), (20.44, .13), (21.19, .12),
                 (19.63, .07), (20.06, .05)],
})


def imagenet_table():
    """Table 3: ResNet-34 on ImageNet-2012, 4 students (OKDDip both network- and branch-based).

    The paper prints no std for it. Branch groups share all but the last two stages (decision
    17); the recipe is the paper's ImageNet one (okddip_tf.config.imagenet_recipe).
    """
    columns = (("Baseline", "baseline", "branch", 26.76), ("DML", "dml", "network", 26.03),
               ("CL-ILR", "cl_ilr", "branch", 26.06), ("ONE", "one", "branch", 25.92),
               ("OKDDip (network)", "okddip", "network", 25.42),
               ("OKDDip (branch)", "okddip", "branch", 25.60))
    cells = tuple(Cell("ResNet-34", column, paper_run(IMAGENET, "resnet34_imagenet", method,
                                                      sharing), (value, None))
                  for column, method, sharing, value in columns)
    return Experiment(
        "table3", "Top-1 error (%) of ResNet-34 on ImageNet-2012, 4 students", "table",
        ("ResNet-34",), tuple(column for column, _, _, _ in columns), cells,
        "ImageNet recipe: batch 256, weight decay 1e-4, lr /10 at 30 and 60 of 90 epochs (pass "
        "--epochs=90 for the paper's schedule; other budgets scale it). Branch-based students "
        "own the last two stages. Needs imagenet2012 prepared for tfds.")


def ensemble_table():
    """Table 4: the branch-based peers' ensemble on CIFAR-100 (OKDDip without a leader)."""
    numbers = {"VGG-16": (25.56, 25.54, 24.95, 25.62), "ResNet-32": (27.01, 24.90, 23.45, 23.74),
               "ResNet-110": (20.19, 20.14, 19.54, 20.18)}
    columns = (("CL-ILR", "cl_ilr", ()), ("ONE", "one", ()),
               ("OKDDip", "okddip", (("okddip.two_level", False),)),
               ("Ind", "independent", ()))
    cells = tuple(
        Cell(row, column, paper_run("cifar100", ARCHITECTURES[row], method, options=options),
             (value, None), metric="ensemble")
        for row, values in numbers.items() for (column, method, options), value in
        zip(columns, values))
    return Experiment(
        "table4", "Top-1 error (%) of the peers' ensemble (mean logits), branch-based, CIFAR-100",
        "table", tuple(numbers), tuple(column for column, _, _ in columns), cells,
        "As the authors measured it: every branch is a peer (OKDDip without its leader, "
        "okddip.two_level=False), and the epoch is chosen by the ensemble's own test accuracy.")


def ablation_table():
    """Table 5: OKDDip's ablations, branch-based ResNet-32 on CIFAR-100."""
    columns = (
        ("w/o SA (random)", (("okddip.attention", "random"),), (28.24, .16)),
        ("w/o SA (entropy)", (("okddip.attention", "self"),), (26.71, .19)),
        ("w/o SA (mean)", (("okddip.attention", "mean"),), (26.35, .14)),
        ("w/o SA (asymmetry)", (("okddip.attention", "identity"),), (26.05, .17)),
        ("w/o two-level", (("okddip.two_level", False),), (27.79, .14)),
        ("OKDDip", (), (25.63, .14)),
    )
    cells = tuple(Cell("ResNet-32", column, Run("cifar100", "resnet32", "okddip",
                                                options=options), value)
                  for column, options, value in columns)
    return Experiment(
        "table5", "Ablations: top-1 error (%), branch-based ResNet-32, CIFAR-100", "table",
        ("ResNet-32",), tuple(column for column, _, _ in columns), cells,
        "entropy: each peer attends only to itself, so the first-level KL is zero (no entropy "
        "term is added). asymmetry: W_E = W_L = identity. w/o two-level: no leader; a student "
        "drawn from the seed is reported.")


# The authors' KD loads its teacher's best.pth (train_kd.py:305-314), the checkpoint of the epoch
# with the best test accuracy (train.py:223-232): selected on the test split.
BEST_TEACHER = (("kd.teacher_checkpoint", "best"),)


def teacher_table():
    """Table 6: ResNet-32 with a ResNet-110 teacher, CIFAR-10 and CIFAR-100."""
    numbers = {"CIFAR-10": ("cifar10", ((6.34, .03), (6.08, .11), (5.58, .08), (5.36, .06),
                                        (5.27, .23))),
               "CIFAR-100": ("cifar100", ((28.76, .08), (26.51, .14), (25.63, .14), (24.92, .08),
                                          (24.12, .20)))}
    cells = []
    for row, (dataset, values) in numbers.items():
        teacher = Run(dataset, "resnet110_bottleneck", "baseline")
        runs = (("Baseline", Run(dataset, "resnet32", "baseline")),
                ("KD", Run(dataset, "resnet32", "kd", options=BEST_TEACHER, teacher=teacher)),
                ("OKDDip", Run(dataset, "resnet32", "okddip")),
                ("OKDDip+KD", Run(dataset, "resnet32", "okddip_kd", options=BEST_TEACHER,
                                  teacher=teacher)),
                ("Teacher", teacher))
        cells += [Cell(row, column, run, value) for (column, run), value in zip(runs, values)]
    return Experiment(
        "table6", "Top-1 error (%) of ResNet-32 with a ResNet-110 teacher", "table",
        tuple(numbers), ("Baseline", "KD", "OKDDip", "OKDDip+KD", "Teacher"), tuple(cells),
        "The teacher is the bottleneck ResNet-110 baseline trained at the same budget and seed; "
        "KD and OKDDip+KD load its best test-split epoch (kd.teacher_checkpoint=best), as the "
        "authors' KD loads best.pth.",
        row_label="Dataset")


def diversity_figure():
    """Figure 2: peer diversity per epoch of the branch-based methods, CIFAR-100."""
    columns = (("OKDDip", "okddip"), ("ONE", "one"), ("CL-ILR", "cl_ilr"), ("Ind", "independent"))
    rows = ("ResNet-32", "ResNet-110")
    cells = tuple(Cell(row, column, paper_run("cifar100", ARCHITECTURES[row], method),
                       metric="diversity")
                  for row in rows for column, method in columns)
    return Experiment(
        "figure2", "Peer diversity during training, branch-based, CIFAR-100", "diversity", rows,
        tuple(column for column, _ in columns), cells,
        "Diversity: the mean over pairs of auxiliary peers of the L2 distance between their "
        "softmax outputs, on the test split (for ONE, CL-ILR and Ind the first 3 branches, as "
        "the authors' code measures).")


def group_size_figure():
    """Figure 3: error against the number of branches (3 to 8), ResNet-32, CIFAR-100."""
    methods = (("OKDDip", "okddip", (25.63, .14)), ("ONE", "one", (26.50, .13)),
               ("CL-ILR", "cl_ilr", (27.44, .05)))
    sizes = tuple(range(3, 9))
    cells = tuple(
        Cell(column, f"m={size}", Run("cifar100", "resnet32", method, num_students=size),
             value if size == 4 else None)
        for column, method, value in methods for size in sizes)
    return Experiment(
        "figure3", "Top-1 error (%) against the group size, branch-based ResNet-32, CIFAR-100",
        "group_size", tuple(column for column, _, _ in methods),
        tuple(f"m={size}" for size in sizes), cells,
        "The figure prints no numbers; its 4-student points are Table 2's.", row_label="Method")


EXPERIMENTS = {experiment.name: experiment for experiment in (
    TABLE1, TABLE2, imagenet_table(), ensemble_table(), ablation_table(), teacher_table(),
    diversity_figure(), group_size_figure())}


def get_experiment(name):
    if name not in EXPERIMENTS:
        raise ConfigError(f"Unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}.")
    return EXPERIMENTS[name]


def cell_terms(cell):
    """The words `--only` matches a cell by (lower case)."""
    run = cell.run
    words = {cell.row, cell.column, run.dataset, run.backbone, run.method, run.id}
    if not run.single:
        words.add(run.sharing)
    return {word.lower() for word in words}


def select(experiment, only=None):
    """The cells `--only=a,b` keeps: those any of the comma-separated words names."""
    if not only:
        return experiment.cells
    words = [word.strip().lower() for word in only.split(",") if word.strip()]
    return tuple(cell for cell in experiment.cells
                 if any(word in cell_terms(cell) for word in words))


def tfds_prepared(name, data_dir=None):
    """Whether tfds has `name` prepared in `data_dir` (None: $TFDS_DATA_DIR, then tfds' default
    ~/tensorflow_datasets): a `<data_dir>/<name>/<version>/dataset_info.json` exists."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
        os.path.join("~", "tensorflow_datasets"))
    return bool(glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json"))), data_dir


def missing_data(dataset):
    """What to prepare before `dataset` can train ("" when it can): only ImageNet-2012, which
    tfds cannot download (CIFAR is downloaded on first use)."""
    if dataset != IMAGENET:
        return ""
    prepared, data_dir = tfds_prepared(dataset)
    if prepared:
        return ""
    return (f"dataset {dataset!r} is not prepared in {data_dir}: download "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org (after "
            "registering) into a folder, run `tfds build imagenet2012 --manual_dir=<that folder> "
            f"--data_dir={data_dir}` (about 150 GB), and set TFDS_DATA_DIR to that data_dir if "
            "it is not the default")


def unavailable(run):
    """Why this installation cannot train `run` ("" when it can): a missing method, backbone or
    dataset (see `missing_data`)."""
    from okddip_tf import models  # pylint: disable=import-outside-toplevel  (Keras: on use)

    for needed in filter(None, (run, run.teacher)):
        if needed.method not in methods.SPECS:
            return f"method {needed.method!r} is not implemented"
        if needed.backbone not in models.BACKBONES:
            return f"backbone {needed.backbone!r} is not implemented"
        missing = missing_data(needed.dataset)
        if missing:
            return missing
    return ""
