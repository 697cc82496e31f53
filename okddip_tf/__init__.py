"""okddip_tf: Online Knowledge Distillation with Diverse Peers (Chen et al., AAAI 2020) for Keras."""

import os

# TensorFlow's oneDNN CPU kernels are off by default on CPUs without AVX-512 and are chosen when
# TensorFlow loads, so this works when okddip_tf is imported first (as `okddip` does). They speed
# up the convolutions that dominate the training step (benchmarks/step_profile.py --onednn=0|1).
# Set TF_ENABLE_ONEDNN_OPTS=0 to keep TensorFlow's own default.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from okddip_tf import losses
from okddip_tf.attention import PeerAttention
from okddip_tf.callbacks import DistillWeightRampup, DiversityLogger, NaNGuard
from okddip_tf.group import GroupModel
from okddip_tf.methods import METHODS
from okddip_tf.models import BACKBONES
from okddip_tf.normalization import PixelNormalization
from okddip_tf.optim import CoupledSGD, paper_sgd

__version__ = "0.1.0"
