"""Baseline: one ResNet-32 trained with cross-entropy only, CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_baseline.py --workdir=runs/c100_r32_baseline

Paper (Table 2): the network's top-1 error 28.76% (71.24% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). `:smoke` is
a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar100", "baseline", arg, num_students=1)
