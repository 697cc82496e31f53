"""What each training method declares, as plain data: the config reads it without Keras.

A method's options (one `config.<section>` per option group, with defaults), the knobs `okddip
tune` may search, the group sizes and sharings it trains, whether it distils, reads the
temperature or needs a teacher: everything the config schema, the command line's checks and the
tuner's search space need before TensorFlow starts. The layers, outputs and loss live in the
method's own module (`module`, `class_name`), which builds on this declaration
(`base.Method.__init_subclass__` copies it onto the class).
"""

import dataclasses
from typing import Mapping, Optional

from okddip_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TunerKnob:
    """A hyperparameter `okddip tune` may search: `config.tuner.<name>` holds its values.

    kind: "range" or "log" (a (low, high) float range) or "choice" (a tuple of integers).
    """

    name: str
    key: str  # "<section>.<key>" of the config
    kind: str
    default: tuple


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method's declaration.

    Attributes:
      name: the registered name (`config.model.method`).
      module, class_name: where its implementation lives (okddip_tf.methods.<module>).
      sections: {section: {option: default}}; each section becomes `config.<section>`, and
        several methods may read one section (OKDDip+KD reads `okddip` and `kd`) with the same
        defaults. A None default is an optional integer in the config.
      tuner_knobs: the method's own searchable hyperparameters.
      min_students, max_students: the group sizes it trains.
      sharings: "branch" and/or "network".
      distills: whether it takes the ramped distillation weight w(e).
      uses_temperature: whether `model.temperature` matters (None: when it distils).
      needs_teacher: whether a pretrained teacher must be located or trained before the group
        is built (`kd.teacher` / `kd.teacher_config`; see okddip_tf.teachers).
    """

    name: str
    module: str
    class_name: str
    sections: Mapping = dataclasses.field(default_factory=dict)
    tuner_knobs: tuple = ()
    min_students: int = 2
    max_students: int = 8
    sharings: tuple = ("branch", "network")
    distills: bool = False
    uses_temperature: Optional[bool] = None
    needs_teacher: bool = False

    def __post_init__(self):
        if self.uses_temperature is None:
            object.__setattr__(self, "uses_temperature", self.distills)

    @property
    def options(self):
        """{option: default} over every section it reads."""
        return {key: default for section in self.sections.values()
                for key, default in section.items()}


OKDDIP_SECTION = {"okddip": {
    "attention": "learned",  # learned | random | self | mean | identity (Table 5's ablations)
    "attention_dim": None,  # W_L / W_E size; None: feature_dim // 8, as the authors' code
    "attention_scale": False,  # divide energies by sqrt(dim) (the code does not)
    "detach_targets": False,  # stop gradients through the targets (the code does not)
    "target_space": "logits",  # mix peer logits (code) | probabilities (paper Eq. 5)
    "two_level": True,  # False: no leader (Table 5's "w/o two-level")
    "reported_student": -1,  # two_level=False: the reported student; -1 draws it from the seed
}}
KD_SECTION = {"kd": {
    "teacher": "",  # an okddip_tf workdir or a .keras file; "" trains kd.teacher_config first
    "teacher_config": "",  # "configs/FILE.py[:arg]": trained into <workdir>/teacher/
    # A workdir teacher's checkpoint: "last" (its last epoch) | "best" (its best test epoch,
    # checkpoints/best.keras: the authors' KD, train_kd.py:306; selected on the test split)
    "teacher_checkpoint": "last",
    "alpha": 1.0,  # the weight of the teacher's KL term
}}
ATTENTION_DIM_KNOB = TunerKnob("attention_dim", "okddip.attention_dim", "choice", (4, 8, 16))
KD_ALPHA_KNOB = TunerKnob("kd_alpha", "kd.alpha", "range", ())

SPECS = {spec.name: spec for spec in (
    MethodSpec("baseline", "baseline", "Baseline", min_students=1, max_students=1),
    MethodSpec("independent", "independent", "Independent"),
    MethodSpec("okddip", "okddip", "OKDDip", OKDDIP_SECTION, (ATTENTION_DIM_KNOB,),
               distills=True),
    MethodSpec("kd", "kd", "KD", KD_SECTION, (KD_ALPHA_KNOB,), min_students=1, max_students=1,
               uses_temperature=True, needs_teacher=True),
    MethodSpec("okddip_kd", "okddip_kd", "OKDDipKD", {**OKDDIP_SECTION, **KD_SECTION},
               (ATTENTION_DIM_KNOB, KD_ALPHA_KNOB), distills=True, needs_teacher=True),
    MethodSpec("cl_ilr", "cl_ilr", "CLILR", {"cl_ilr": {"rescale_gradient": True}},
               sharings=("branch",), distills=True),
    MethodSpec("one", "one", "ONE", {"one": {"detach_teacher": False}}, sharings=("branch",),
               distills=True),
    MethodSpec("dml", "dml", "DML", {"dml": {"pairwise": False}}, uses_temperature=True),
)}


def get_spec(name):
    """The declaration of the method registered as `name`; the error lists the known ones."""
    if name not in SPECS:
        raise ConfigError(f"Unknown method {name!r}. Known methods: {sorted(SPECS)}. Set it with "
                          "method=... or --config.model.method=...")
    return SPECS[name]


def config_sections():
    """{section: {option: default}} over every method; a section shared by two must agree."""
    sections = {}
    for spec in SPECS.values():
        for section, defaults in spec.sections.items():
            if sections.setdefault(section, defaults) != defaults:
                raise RuntimeError(f"Methods disagree on the defaults of config section "
                                   f"{section!r}.")
    return sections


def tuner_knobs():
    """{knob name: TunerKnob} over every method; names are unique."""
    knobs = {}
    for spec in SPECS.values():
        for knob in spec.tuner_knobs:
            if knobs.setdefault(knob.name, knob) != knob:
                raise RuntimeError(f"Two methods declare different tuner knobs named "
                                   f"{knob.name!r}.")
    return knobs


def options_from_config(config):
    """The options of `config.model.method`, read from its config sections."""
    spec = get_spec(config.model.method)
    return {key: config[section][key] for section in spec.sections
            for key in spec.sections[section]}


def check_options(spec, options):
    """Fails on option names the method does not take, listing the ones it does."""
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(f"Method {spec.name!r} has no option(s) {unknown}. Its options: "
                          f"{sorted(spec.options) or 'none'}.")


def check_group(spec, num_students, sharing):
    """Fails fast on a group the method cannot train, saying how to fix it."""
    if not spec.min_students <= num_students <= spec.max_students:
        raise ConfigError(
            f"Method {spec.name!r} needs num_students between {spec.min_students} and "
            f"{spec.max_students}, got {num_students}. Set --config.model.num_students "
            "(OKDDip's default is 4: 3 peers and a leader; 'baseline' and 'kd' use 1).")
    if num_students > 1 and sharing not in spec.sharings:
        raise ConfigError(
            f"Method {spec.name!r} needs sharing in {spec.sharings}, got {sharing!r}. Set "
            f"--config.model.sharing={spec.sharings[0]}.")
