"""Ind: 4 branch-based ResNet-32 students, each with its own cross-entropy, no distillation,
CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_independent.py --workdir=runs/c10_r32_ind

Paper (Table 1): the mean over the 4 students' top-1 error 5.99% (94.01% accuracy), mean of 3 runs
at the best test epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best
epoch). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "independent", arg)
