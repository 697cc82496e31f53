"""Ind: 4 branch-based ResNet-32 students, each with its own cross-entropy, no distillation,
CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_independent.py --workdir=runs/c100_r32_ind

Paper (Table 2): the mean over the 4 students' top-1 error 27.84% (72.16% accuracy), mean of 3 runs
at the best test epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best
epoch). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar100", "independent", arg)
