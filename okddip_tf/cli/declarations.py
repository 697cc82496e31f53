"""Every `okddip` command and its flags, declared once: a `Flag` each (name, default, help,
metavar) in COMMANDS; the command's absl FlagValues (`flag_values`) and its `--help` (usage.py)
are both made from them."""

import dataclasses
import functools
import textwrap

from absl import flags
from ml_collections import config_flags

from okddip_tf import quiet

ENV_VERBOSE = "OKDDIP_VERBOSE"
HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
HELPFULL_ARGS = ("--helpfull", "-helpfull")
SIGNAL_EXIT = 128  # + the signal's number: 130 after SIGINT, 143 after SIGTERM


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a command: both its parsing (absl) and its `--help` lines are made from this."""

    name: str
    help: str
    metavar: str = ""  # how help writes the value, --name=METAVAR; a bool flag has none
    default: object = None
    kind: str = "string"  # string | integer | float | list | enum | bool | config
    choices: tuple = ()  # an enum's values
    shown_default: str = ""  # help's default where the value itself says little
    required: bool = False
    # For a command with a config (train, tune) given this flag of another command: where its
    # setting lives there ({command} is that command's name).
    in_config: str = ""

    def define(self, flag_values):
        """Defines this flag in `flag_values` (one command's absl FlagValues)."""
        if self.kind == "config":
            config_flags.DEFINE_config_file(self.name, self.default, self.help,
                                            flag_values=flag_values, lock_config=True)
        elif self.kind == "enum":
            flags.DEFINE_enum(self.name, self.default, list(self.choices), self.help,
                              flag_values=flag_values)
        else:
            define = {"string": flags.DEFINE_string, "integer": flags.DEFINE_integer,
                      "float": flags.DEFINE_float, "list": flags.DEFINE_list,
                      "bool": flags.DEFINE_bool}[self.kind]
            define(self.name, self.default, self.help, flag_values=flag_values)

    @property
    def takes_value(self):
        return self.kind != "bool"

    @property
    def usage(self):
        return f"--{self.name}={self.metavar}" if self.metavar else f"--{self.name}"

    def help_lines(self):
        """`--help`'s lines for this flag: `--name=METAVAR`, then its help and default."""
        if self.shown_default:
            default = self.shown_default
        elif self.required:
            default = "required"
        elif self.default is None:
            default = "none"
        elif isinstance(self.default, bool):
            default = str(self.default).lower()
        else:
            default = str(self.default)
        text = f"{self.help[:1].upper()}{self.help[1:]} (default: {default})"
        return [f"  {self.usage}", *textwrap.wrap(text, 92, initial_indent="      ",
                                                  subsequent_indent="      ")]


SHARED = (
    Flag("verbose", f"show the traceback of an error (or set {ENV_VERBOSE}=1).", default=False,
         kind="bool"),
    Flag("tf_logs", "show TensorFlow's start-up and C++ log lines (or set "
         f"{quiet.ENV_SHOW}=1).", default=False, kind="bool"),
)
CONFIG = Flag("config", "config file (configs/*.py[:arg]).", "FILE[:ARG]", kind="config",
              required=True)
SEED_HINT = "{command} runs the config's one seed: --config.train.seed=K"

CONFIG_HELP = """\
Config: --config=FILE[:ARG] loads FILE's get_config(ARG), e.g. configs/quickstart.py:smoke.
Override any key with --config.<section>.<key>=<value>, e.g. --config.model.temperature=4
--config.train.epochs=10 --config.optim.drop_epochs='(5, 8)'. A key the config lacks is an
error. Every key and its default: okddip_tf/config.py."""


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str
    flags: tuple  # of Flag, besides SHARED
    example: str
    about: str = ""
    one_of: tuple = ()  # flag names of which the command needs at least one

    @property
    def has_config(self):
        return any(flag.kind == "config" for flag in self.flags)

    def flag(self, name):
        """This command's (or a shared) Flag called `name`, else None."""
        return next((flag for flag in self.flags + SHARED if flag.name == name), None)

    def usage(self, name):
        needed = [flag.usage for flag in self.flags if flag.required]
        if self.one_of:
            needed.append("|".join(self.flag(each).usage for each in self.one_of))
        tail = " [--config.<section>.<key>=VALUE ...]" if self.has_config else ""
        return f"okddip {name} {' '.join(needed)} [flags]{tail}"


COMMANDS = {
    "train": Command(
        "Train a group of peers and a leader; writes checkpoints, TensorBoard logs and metrics.",
        (CONFIG, Flag("workdir", "directory for checkpoints, logs and metrics.", "DIR",
                      required=True)),
        "okddip train --config=configs/quickstart.py --workdir=runs/quickstart",
        "Running it again on the same --workdir continues the run from its last checkpoint, "
        "also after Ctrl-C."),
    "export": Command(
        "Write the trained leader as a TF Serving SavedModel, TFLite files and a report.",
        (Flag("workdir", "an `okddip train` run: its last checkpoint, data and export/.", "DIR"),
         Flag("checkpoint", "a .keras group checkpoint.", "PATH",
              shown_default="<workdir>/checkpoints/last.keras"),
         Flag("export_dir", "where to write.", "DIR", shown_default="<workdir>/export"),
         Flag("model_name", "the TF Serving model name.", "NAME", default="leader"),
         Flag("model_version", "the version to write.", "N", kind="integer",
              shown_default="the latest + 1"),
         Flag("overwrite", "replace --model_version (without one: the latest).", default=False,
              kind="bool"),
         Flag("formats", "any of saved_model,float32,float16,dynamic_int8,int8.", "LIST",
              kind="list", shown_default="all; int8 only with the run's training data"),
         Flag("eval_examples", "test images for the report's accuracy and parity; 0: none.", "N",
              kind="integer", shown_default="the run's evaluation split"),
         Flag("calibration_images", "training images calibrating int8.", "N", default=1000,
              kind="integer"),
         Flag("examples", "an .npz of the leader's inputs (`inputs`, optional `labels`) for "
              "int8 calibration and parity, instead of the run's data.", "PATH",
              shown_default="the run's data"),
         Flag("int8_calibration", "int8 activation ranges: 99.999th percentiles, or TFLite's "
              "min/max.", "percentile|minmax", default="percentile", kind="enum",
              choices=("percentile", "minmax"))),
        "okddip export --workdir=runs/quickstart",
        "Needs --workdir (an `okddip train` run) or --checkpoint.",
        one_of=("workdir", "checkpoint")),
    "tune": Command(
        "Search the config's hyperparameters with KerasTuner; writes the best trial's config.",
        (CONFIG, Flag("workdir", "directory for the trials, their logs and the best config.",
                      "DIR", required=True),
         Flag("tuner_id", "this process's part in a search on several processes: `chief` "
              "serves the trials, tuner0, tuner1, ... each train them (sets "
              "KERASTUNER_TUNER_ID).", "ID", shown_default="$KERASTUNER_TUNER_ID, else one "
              "process"),
         Flag("oracle", "the chief's address, where it listens and the workers connect (sets "
              "KERASTUNER_ORACLE_IP and _PORT).", "HOST:PORT",
              shown_default="$KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT"),
         Flag("worker_timeout", "on the chief: seconds without word from a worker before its "
              "trial goes to another worker.", "SECONDS", default=60, kind="integer")),
        "okddip tune --config=configs/cifar100_resnet32_tune.py:smoke --workdir=runs/search",
        "The search space is the config's tuner section (see okddip_tf/config.py). Running it "
        "again on the same --workdir keeps the finished trials and goes on. On several "
        "machines: one `--tuner_id=chief --oracle=HOST:PORT` and workers `--tuner_id=tuner0 "
        "--oracle=HOST:PORT`, ... with the same config and a shared --workdir (README, "
        "Hyperparameter search)."),
    "reproduce": Command(
        "Run the paper's tables and figures at a budget; reports ours beside the paper's.",
        (Flag("experiment", "the paper's table or figure (table1, table2, table3, table4, "
              "table5, table6, figure2, figure3).", "NAME", required=True),
         Flag("workdir", "directory of every cell's run, the report and figures/.", "DIR",
              required=True),
         Flag("epochs", "training epochs per cell; the paper's schedule is scaled to them.",
              "E", kind="integer", shown_default="300, the paper's; 2 with --smoke",
              in_config="{command} takes its epochs from the config: --config.train.epochs=N"),
         Flag("seeds", "runs per cell (train.seed 0, 1, ...).", "N", default=3, kind="integer",
              in_config=SEED_HINT),
         Flag("train_seeds", "train only these of the --seeds seeds (e.g. 1,2 beside a seed 0 "
              "trained before); the report reads every seed.", "K,..", kind="list",
              shown_default="every seed", in_config=SEED_HINT),
         Flag("train_examples", "train on the first N training images only.", "N",
              kind="integer", shown_default="the whole split",
              in_config="{command} takes it from the config: --config.data.train_examples=N"),
         Flag("only", "comma-separated words; only the cells whose row, column, dataset, "
              "backbone, method or run id is one of them.", "WORDS",
              shown_default="every cell"),
         Flag("parallel", "cells trained at once on this machine (one GPU each; with "
              "CUDA_VISIBLE_DEVICES set, they share the GPUs it names).", "N",
              default=1, kind="integer"),
         Flag("npz", "read the cells' data from this .npz (data.source=npz) instead of "
              "tensorflow-datasets, e.g. on a JAX machine without TensorFlow; every selected "
              "cell must train on its dataset.", "PATH", shown_default="tensorflow-datasets",
              in_config="{command} takes it from the config: --config.data.source=npz "
              "--config.data.path=PATH"),
         Flag("ray", "run each cell as a Ray task: on the cluster `ray start` runs here (auto), "
              "on one started on this machine (local), or on the cluster at HOST:PORT; the "
              "workdir must be shared by every worker. Needs pip install -e \".[ray]\".",
              "ADDRESS", shown_default="none: the cells run on this machine"),
         Flag("cell_cpus", "with --ray: the CPUs each cell asks Ray for.", "N", kind="float",
              shown_default="1"),
         Flag("cell_gpus", "with --ray: the GPUs each cell asks Ray for (a fraction shares a "
              "GPU).", "N", kind="float",
              shown_default="1 where the cluster has GPUs, else 0"),
         Flag("report_only", "train nothing; rebuild the report from the workdir.",
              default=False, kind="bool"),
         Flag("report_dir", "where report.md, results.json and figures/ go.", "DIR",
              shown_default="--workdir"),
         Flag("prior_results", "an earlier report's results.json of the same experiment and "
              "budget; a seed the workdir has not finished is taken from it, marked with its "
              "source.", "PATH", shown_default="none"),
         Flag("smoke", "tiny backbone and data (checks the harness; not a measurement).",
              default=False, kind="bool",
              in_config="a config's smoke size is its argument: --config=FILE:smoke")),
        "okddip reproduce --experiment=table2 --workdir=runs/table2 --epochs=60 --seeds=2 "
        "--only=resnet32",
        "Each cell trains as an `okddip train` workdir under DIR; running the same command "
        "again resumes unfinished cells and skips finished ones. DIR gets report.md, "
        "results.json and figures/. Experiments: table1, table2 (CIFAR-10/100 comparison), "
        "table3 (ImageNet ResNet-34; --epochs=90 is its paper schedule), table4 (ensembles), "
        "table5 (ablations), table6 (with a teacher), figure2 (diversity), "
        "figure3 (group size)."),
}


@functools.lru_cache(maxsize=None)
def flag_values(name):
    """The absl FlagValues of command `name`: its flags and the shared ones, and nothing else."""
    values = flags.FlagValues()
    for flag in COMMANDS[name].flags + SHARED:
        flag.define(values)
    return values
