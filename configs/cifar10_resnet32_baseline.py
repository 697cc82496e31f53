"""Baseline: one ResNet-32 trained with cross-entropy only, CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_baseline.py --workdir=runs/c10_r32_baseline

Paper (Table 1): the network's top-1 error 6.34% (93.66% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). `:smoke` is
a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "baseline", arg, num_students=1)
