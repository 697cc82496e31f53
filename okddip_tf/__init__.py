"""okddip_tf: Online Knowledge Distillation with Diverse Peers (Chen et al., AAAI 2020) for Keras.

The public names below are imported on first use, so `import okddip_tf` (and the `okddip`
command's help and argument checks) does not start TensorFlow; `okddip_tf.GroupModel` etc. work
as before.
"""

import importlib
import importlib.util
import os
import sys

# TensorFlow's oneDNN CPU kernels are off by default on CPUs without AVX-512 and are chosen when
# TensorFlow loads, so this works when okddip_tf is imported first (as `okddip` does). They speed
# up the convolutions that dominate the training step (benchmarks/step_profile.py --onednn=0|1).
# Set TF_ENABLE_ONEDNN_OPTS=0 to keep TensorFlow's own default.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# public name -> the submodule defining it
_EXPORTS = {
    "PeerAttention": "methods.attention",
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


# Keras finds the okddip_tf classes of a saved `.keras` file (GroupModel, its layers and its
# optimizer) only once they are registered. When Keras is already loaded, register them now: that
# starts nothing new.
# Otherwise they register on first use (`okddip_tf.GroupModel`, `import okddip_tf.group`).
if "keras" in sys.modules:
    importlib.import_module(f"{__name__}.group")
