"""The base config: every key okddip_tf reads, with its default. Files in configs/ change a few.

Defaults follow the paper's CIFAR recipe and the authors' code (see decisions.md in the docs).
Plain data: this module and what it imports (the methods' declarations, okddip_tf.methods.specs)
load neither Keras nor TensorFlow, so a wrong key or value is reported before either starts.
"""

import importlib.util
import os

from ml_collections import config_dict

from okddip_tf.errors import ConfigError, MissingInputError
from okddip_tf.methods import specs

placeholder = config_dict.placeholder


def get_base_config():
    config = config_dict.ConfigDict()

    config.model = config_dict.ConfigDict()
    config.model.method = "okddip"  # a name in okddip_tf.methods.SPECS
    # A registered name, or your own model: package.module:factory or a .keras file.
    config.model.backbone = "resnet32"
    # Own model: keep its weights or start fresh (None: keep for a .keras file, fresh for a factory).
    config.model.weights = placeholder(str)
    config.model.split_stage = placeholder(int)  # first per-student stage (None: the paper's)
    config.model.split_at = placeholder(str)  # own model: the layer the branches start after
    config.model.batchnorm = "pytorch"  # pytorch (momentum 0.9, eps 1e-5) | keras (0.99, 1e-3)
    # Dropout of backbones that have it (vgg16's classifier); None: the authors' value for the
    # group (authors_dropout: 0.5 in branch groups, 0.0 for one network or network groups).
    config.model.dropout = placeholder(float)
    config.model.num_students = 4  # m: m - 1 auxiliary peers plus the leader
    config.model.sharing = "branch"  # branch (shared trunk) | network (m independent networks)
    config.model.temperature = 3.0  # T of every distilling method
    config.model.sync_batchnorm = "auto"

    # One section per method option group (config.okddip, config.kd, ...), declared by the
    # methods' declarations (okddip_tf/methods/specs.py); a run reads those of its model.method.
    for section, defaults in specs.config_sections().items():
        config[section] = config_dict.ConfigDict(
            {key: placeholder(int) if value is None else value for key, value in defaults.items()})

    config.data = config_dict.ConfigDict()
    config.data.source = "tfds"  # tfds | folder | npz (arrays; no TensorFlow needed: data/npz.py)
    config.data.name = "cifar100"  # the tfds name
    config.data.data_dir = placeholder(str)  # None: $TFDS_DATA_DIR, then tfds' default
    config.data.directory = placeholder(str)  # source=folder: <directory>/<split>/<class>/*.png
    config.data.path = placeholder(str)  # source=npz: the .npz file (x_/y_<split> or JPEG layout)
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.train_examples = placeholder(int)  # None: the whole split
    config.data.eval_examples = placeholder(int)
    config.data.batch_size = 128  # the global batch
    config.data.eval_batch_size = 256
    config.data.augment = True  # zero-pad 4, random crop, horizontal flip
    config.data.shuffle_buffer = 50_000
    config.data.cache = True
    # A tfds dataset missing from data_dir is downloaded once (when its host answers within
    # seconds); False, or the environment variable OKDDIP_OFFLINE=1, never downloads.
    config.data.download = True
    config.data.pipeline = "cifar"  # cifar | imagenet (okddip_tf/data/imagenet.py: any size)
    config.data.image_size = 224  # pipeline=imagenet: the crop size

    config.optim = config_dict.ConfigDict()
    config.optim.learning_rate = 0.1
    config.optim.momentum = 0.9
    config.optim.nesterov = True
    config.optim.l2 = 5e-4  # coupled, on every trainable weight (PyTorch weight_decay)
    config.optim.weight_decay = "coupled"  # coupled (PyTorch's L2) | decoupled (Keras' SGD)
    # lr x0.1 from the first step after this many epochs (150: from Keras' "Epoch 151/300" on)
    config.optim.drop_epochs = (150, 225)
    config.optim.drop_factor = 0.1

    config.rampup = config_dict.ConfigDict()
    config.rampup.length = 80  # epochs; w(e) = exp(-5 (1 - e/L)^2)
    config.rampup.max_weight = 1.0
    config.rampup.per_step = False  # True: the paper's iteration-dependent ramp-up

    config.train = config_dict.ConfigDict()
    config.train.epochs = 300
    config.train.seed = 0
    # The progress (loss, the method's accuracy, time left; every value goes to history.json and
    # TensorBoard): 1 a line redrawn each step on a terminal, one line per epoch (and one a
    # minute in long epochs) into a file or pipe; 2 one line per epoch; 0 none.
    config.train.verbose = 1
    config.train.probe_images = 512  # test images the diversity/attention logger runs on
    # default (one device) | mirrored | multi_worker_mirrored | tpu | auto (mirrored on >1 GPU)
    config.train.strategy = "default"
    config.train.tpu = ""  # strategy=tpu: the TPU name or address ("" = local / from the env)
    config.train.precision = "float32"  # float32 | mixed_float16 | mixed_bfloat16
    config.train.jit_compile = False  # XLA; measured slower on CPU, and fails under a strategy
    config.train.deterministic = False  # seeds and op determinism: identical reruns
    config.train.resume = True  # continue from <workdir>/checkpoints when it holds a run

    # `okddip tune` (okddip_tf/tuner.py). Each trial trains the first tuner.epochs epochs of this
    # config's run. A search dimension is a (low, high) range for floats, a tuple of choices for
    # ints; () keeps the config's value.
    config.export = config_dict.ConfigDict()
    config.export.after_training = False  # run `okddip export` on the workdir when training ends

    config.tuner = config_dict.ConfigDict()
    config.tuner.algorithm = "random"  # random | hyperband | bayesian (needs scikit-learn)
    config.tuner.objective = "val_leader_accuracy"  # a logged metric; "val_" ones are on eval_split
    config.tuner.max_trials = 20  # random and bayesian; hyperband sizes itself from epochs, factor
    config.tuner.epochs = 30  # training epochs per trial (hyperband: the most a trial gets)
    config.tuner.hyperband_factor = 3
    config.tuner.executions_per_trial = 1  # > 1: the objective is averaged over repeated fits
    # The trials' data: a held-out part of the training split, so the search never sees the test
    # split. "" uses data.train_split / data.eval_split.
    config.tuner.train_split = "train[:90%]"
    config.tuner.eval_split = "train[90%:]"
    config.tuner.temperature = (1.0, 6.0)  # model.temperature, a range
    config.tuner.learning_rate = (0.01, 0.2)  # optim.learning_rate, a range sampled in log scale
    config.tuner.rampup_length = (0, 20, 80)  # rampup.length, choices
    config.tuner.num_students = (2, 3, 4, 5)  # model.num_students, choices
    # The methods' own knobs (e.g. attention_dim: okddip.attention_dim, choices); a search uses
    # those of its model.method.
    for knob in specs.tuner_knobs().values():
        config.tuner[knob.name] = knob.default
    return config


# The authors' VGG-16 dropout: 0.5 in their branch-based models (models/model_cifar/vgg_GL.py:20,
# vgg_one.py:63,66), their --dropout default 0.0 for one network and network-based groups
# (train.py:49, train_kd.py:52, train_GL.py:48 with MultiNet.py:22, train_DML.py:46 with DML.py:20).
AUTHORS_BRANCH_DROPOUT = 0.5
AUTHORS_NETWORK_DROPOUT = 0.0


def authors_dropout(sharing, num_students):
    """The authors' dropout for a group: 0.5 for branches of a shared trunk (m > 1), else 0.0."""
    branches = sharing == "branch" and num_students > 1
    return AUTHORS_BRANCH_DROPOUT if branches else AUTHORS_NETWORK_DROPOUT


def model_dropout(model):
    """`model.dropout` of a config's model section, None (auto) resolved to `authors_dropout`."""
    dropout = model.get("dropout")
    return authors_dropout(model.sharing, model.num_students) if dropout is None else dropout


def parse_arg(arg, **defaults):
    """Parses "key=value,flag" config arguments (e.g. "smoke") into a dict over `defaults`."""
    result = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in result:
            raise ConfigError(f"Unknown config argument {key!r}; known: {sorted(result)}.")
        result[key] = type(result[key])(value) if value else True
    return result


def apply_smoke(config):
    """A seconds-long run on a real CIFAR subset with the tiny backbone (tests, CI)."""
    config.model.backbone = "tiny"
    config.data.train_examples = 256
    config.data.eval_examples = 128
    config.data.batch_size = 32
    config.data.eval_batch_size = 64
    config.data.shuffle_buffer = 256
    config.train.epochs = 2
    config.train.verbose = 2
    config.train.probe_images = 64
    config.rampup.length = 2
    config.tuner.max_trials = 2
    config.tuner.epochs = 1
    return config


def paper_config(dataset, method, arg=None, *, num_students=4, sharing="branch",
                 variants=("smoke",)):
    """The paper's CIFAR recipe for one method: what each `configs/<dataset>_resnet32_*.py` returns.

    `arg` takes the file's variants: "smoke" (seconds, tiny backbone, KD trains a tiny teacher),
    "network" (m independent networks) and "branch" where offered.
    """
    args = parse_arg(arg, **{variant: False for variant in variants})
    config = get_base_config()
    config.data.name = dataset
    config.model.method = method
    # One student for single-network methods (baseline, KD).
    spec = specs.get_spec(method)
    config.model.num_students = min(num_students, spec.max_students)
    config.model.sharing = sharing
    if args.get("network"):
        config.model.sharing = "network"
    if args.get("branch"):
        config.model.sharing = "branch"
    if spec.needs_teacher:  # the paper's teacher: the bottleneck ResNet-110 baseline
        config.kd.teacher_config = (f"configs/{dataset}_resnet32_baseline.py:smoke"
                                    if args["smoke"] else f"configs/{dataset}_resnet110_baseline.py")
    return apply_smoke(config) if args["smoke"] else config


def imagenet_recipe(config):
    """The paper's ImageNet-2012 recipe (Settings; Table 3) on a config: ResNet-34, 224x224 crops,
    batch 256, weight decay 1e-4, lr /10 at epochs 30 and 60 of 90, tfds `imagenet2012` (which
    you prepare: okddip_tf/data/imagenet.py). The ramp-up keeps the CIFAR code's fraction (80 of
    300 epochs: 24 of 90), an assumption: the paper gives none for ImageNet."""
    config.model.backbone = "resnet34_imagenet"
    config.data.pipeline = "imagenet"
    config.data.image_size = 224
    config.data.name = "imagenet2012"
    config.data.train_split, config.data.eval_split = "train", "validation"
    config.data.batch_size = 256
    config.data.eval_batch_size = 256
    config.data.cache = False  # ~140 GB of JPEG files
    config.data.shuffle_buffer = 10_000
    config.optim.l2 = 1e-4
    config.optim.drop_epochs = (30, 60)
    config.train.epochs = 90
    config.rampup.length = 24
    config.train.probe_images = 256
    return config


def validate_config(config):
    """Checks values the builders do not check themselves; raises ValueError saying the fix."""
    checks = [
        (config.train.epochs >= 1, "train.epochs must be >= 1"),
        (config.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (config.optim.learning_rate > 0, "optim.learning_rate must be > 0"),
        (config.optim.l2 >= 0, "optim.l2 must be >= 0"),
        (config.optim.get("weight_decay", "coupled") in ("coupled", "decoupled"),
         "optim.weight_decay must be 'coupled' or 'decoupled'"),
        (config.rampup.length >= 0, "rampup.length must be >= 0 epochs"),
        (list(config.optim.drop_epochs) == sorted(config.optim.drop_epochs),
         "optim.drop_epochs must be increasing"),
        (config.model.temperature > 0, "model.temperature must be > 0 (the paper uses 3)"),
        (config.model.get("dropout") is None or 0.0 <= config.model.dropout < 1.0,
         "model.dropout must be in [0, 1), or None for the authors' value"),
        (config.model.get("weights") in (None, "keep", "fresh"),
         "model.weights must be keep or fresh (or None: keep for a .keras file, fresh otherwise)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"Invalid config: {message}. Fix it in the config file or with "
                              f"--config.<section>.<key>=<value>.")
    # The method's declaration: a known name, and a group size and sharing it trains.
    specs.check_group(specs.get_spec(config.model.method), config.model.num_students,
                      config.model.sharing)


def load_config_file(spec):
    """The locked config of a config file spec "path/to/file.py[:arg]", as `--config=` reads it.

    A relative path is looked up from the working directory, then from the repository root (so
    "configs/..." works from anywhere inside a checkout).
    """
    path, _, arg = spec.partition(":")
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(os.path.dirname(os.path.dirname(__file__)), path))
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise MissingInputError(f"Config file {path!r} not found (looked in the working "
                                "directory and the repository root).")
    module_spec = importlib.util.spec_from_file_location("okddip_loaded_config", found)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.lock()
    return config
