"""OKDDip, branch-based ResNet-32, 4 students (3 peers + leader), CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_okddip.py --workdir=runs/c10_r32_okddip

Paper (Table 1): the leader's top-1 error 5.58% (94.42% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). Network-
based (`:network`, 4 independent networks): 5.62%. `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "okddip", arg, variants=("smoke", "network"))
