"""okddip_tf: Online Knowledge Distillation with Diverse Peers (Chen et al., AAAI 2020) for Keras.

The public names below are imported on first use, so `import okddip_tf` (and the `okddip`
command's help and argument checks) does not start TensorFlow; `okddip_tf.GroupModel` etc. work
as before.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# public name -> the submodule defining it
_EXPORTS = {
    "PeerAttention": "attention",
    "DistillWeightRampup": "callbacks",
    "DiversityLogger": "callbacks",
    "NaNGuard": "callbacks",
    "GroupModel": "group",
    "METHODS": "methods",
    "BACKBONES": "models",
    "PixelNormalization": "normalization",
    "CoupledSGD": "optim",
    "paper_sgd": "optim",
}

__all__ = ["losses", *_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f"{__name__}.{name}")  # e.g. okddip_tf.losses
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
