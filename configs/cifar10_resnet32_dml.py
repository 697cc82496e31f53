"""DML: 4 ResNet-32 networks, each distilling from the mean of the others, CIFAR-10: the paper's
recipe.

    okddip train --config=configs/cifar10_resnet32_dml.py --workdir=runs/c10_r32_dml

Paper (Table 1): the mean over the 4 networks' top-1 error 6.18% (93.82% accuracy), mean of 3 runs
at the best test epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best
epoch). `:branch` shares the trunk up to the last stage; `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "dml", arg, sharing="network",
                               variants=("smoke", "branch"))
