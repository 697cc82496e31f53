"""CL-ILR: 4 ResNet-32 branches, each distilling from the mean of the others, with backprop
rescaling (1/4) at the shared trunk, CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_cl_ilr.py --workdir=runs/c100_r32_cl_ilr

Paper (Table 2): the mean over the 4 branches' top-1 error 27.44% (72.56% accuracy), mean of 3 runs
at the best test epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best
epoch). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar100", "cl_ilr", arg)
