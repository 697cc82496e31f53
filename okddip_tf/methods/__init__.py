"""Training methods: one class per module, declared by name in `specs.py`.

`GroupModel(method=...)` takes a registered name or a `Method` instance; `okddip train` builds
the instance from `config.model.method` and the method's config sections
(`okddip_tf.builders.build_method`). `specs.py` declares every method as plain data (options,
tuner knobs, group sizes, whether it needs a teacher), so the config reads them without Keras;
the implementations (`base.py` and a module each) are imported on first use.
"""

import importlib

from okddip_tf.errors import ConfigError
from okddip_tf.methods.specs import (SPECS, MethodSpec, TunerKnob, config_sections, get_spec,
                                     options_from_config, tuner_knobs)

__all__ = ["SPECS", "MethodSpec", "TunerKnob", "config_sections", "get_spec",
           "options_from_config", "tuner_knobs", "get_method_class", "create_method", "METHODS",
           "Method", "GroupContext", "Students"]
# Names of base.py, imported with it on first use.
_BASE_NAMES = ("Method", "GroupContext", "Students")


def get_method_class(name):
    """The implementation of the method registered as `name` (imports its module)."""
    spec = get_spec(name)
    return getattr(importlib.import_module(f"{__name__}.{spec.module}"), spec.class_name)


def create_method(method, options=None):
    """The method a group trains with, from a name (plus options) or an instance.

    An instance is used as it is, unless another group already uses it (its layers belong to
    that group): then it is copied with the same options.
    """
    base = importlib.import_module(f"{__name__}.base")
    if isinstance(method, base.Method):
        if options:
            raise ConfigError("Pass the options to the Method instance, not method_options.")
        return method.copy() if method.bound else method
    return get_method_class(method)(**(options or {}))


def __getattr__(name):
    if name == "METHODS":  # {name: class}, every implementation imported
        value = {key: get_method_class(key) for key in SPECS}
    elif name in _BASE_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.base"), name)
    elif any(spec.class_name == name for spec in SPECS.values()):
        value = get_method_class(next(key for key, spec in SPECS.items()
                                      if spec.class_name == name))
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
