"""Baseline: one ResNet-32 trained with cross-entropy only, CIFAR-10, the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_baseline.py --workdir=runs/c10_r32_baseline

Paper (Table 1): top-1 error 6.34% (93.66% accuracy).
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.data.name = "cifar10"
    config.model.method = "baseline"
    config.model.num_students = 1
    return common.apply_smoke(config) if args["smoke"] else config
