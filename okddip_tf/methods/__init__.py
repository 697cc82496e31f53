"""Training methods: one class per module, registered here by name.

`GroupModel(method=...)` takes a registered name or a `Method` instance; `okddip train` reads
`config.model.method` and the method's own config sections. See `base.py` for what a method
declares, and each module for its method as the authors' code runs it.
"""

from okddip_tf.errors import ConfigError
from okddip_tf.methods.base import GroupContext, Method, Students, TunerKnob
from okddip_tf.methods.baseline import Baseline
from okddip_tf.methods.cl_ilr import CLILR
from okddip_tf.methods.dml import DML
from okddip_tf.methods.independent import Independent
from okddip_tf.methods.kd import KD
from okddip_tf.methods.okddip import OKDDip
from okddip_tf.methods.okddip_kd import OKDDipKD
from okddip_tf.methods.one import ONE

METHODS = {cls.name: cls for cls in (Baseline, Independent, OKDDip, KD, OKDDipKD, CLILR, ONE,
                                            DML)}


def get_method_class(name):
    """The method class registered as `name`; the error lists the known ones."""
    if name not in METHODS:
        raise ConfigError(
            f"Unknown method {name!r}. Known methods: {sorted(METHODS)}. "
            "Set it with method=... or --config.model.method=..."
        )
    return METHODS[name]


def create_method(method, options=None):
    """A fresh method instance from a name (plus options) or from an instance (copied)."""
    if isinstance(method, Method):
        if options:
            raise ConfigError("Pass the options to the Method instance, not method_options.")
        return type(method)(**method.options)
    return get_method_class(method)(**(options or {}))


def config_sections():
    """{section: {option: default}} over every method; a section shared by two must agree."""
    sections = {}
    for cls in METHODS.values():
        for section, defaults in cls.sections.items():
            if sections.setdefault(section, defaults) != defaults:
                raise RuntimeError(f"Methods disagree on the defaults of config section {section!r}.")
    return sections


def options_from_config(config):
    """The options of `config.model.method`, read from its config sections."""
    cls = get_method_class(config.model.method)
    return {key: config[section][key] for section in cls.sections for key in cls.sections[section]}


def tuner_knobs():
    """{knob name: TunerKnob} over every method; names are unique."""
    knobs = {}
    for cls in METHODS.values():
        for knob in cls.tuner_knobs:
            if knobs.setdefault(knob.name, knob) != knob:
                raise RuntimeError(f"Two methods declare different tuner knobs named {knob.name!r}.")
    return knobs
