"""ONE: 4 ResNet-32 branches taught by their gated ensemble, CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_one.py --workdir=runs/c10_r32_one

Paper (Table 1): the mean over the 4 branches' top-1 error 5.94% (94.06% accuracy), mean of 3 runs
at the best test epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best
epoch). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "one", arg)
