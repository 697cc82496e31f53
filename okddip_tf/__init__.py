"""okddip_tf: Online Knowledge Distillation with Diverse Peers (Chen et al., AAAI 2020) for Keras."""

from okddip_tf import losses, methods
from okddip_tf.attention import PeerAttention
from okddip_tf.callbacks import DistillWeightRampup, DiversityLogger, NaNGuard
from okddip_tf.group import GroupModel
from okddip_tf.methods import METHODS
from okddip_tf.models import BACKBONES
from okddip_tf.normalization import PixelNormalization
from okddip_tf.optim import CoupledSGD, paper_sgd

__version__ = "0.1.0"
