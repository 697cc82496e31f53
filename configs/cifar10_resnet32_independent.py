"""Ind: 4 branch-based ResNet-32 students, own cross-entropy each, no distillation, CIFAR-10.

    okddip train --config=configs/cifar10_resnet32_independent.py --workdir=runs/c10_r32_ind

Paper (Table 1, "Ind"): top-1 error 5.99%.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.data.name = "cifar10"
    config.model.method = "independent"
    return common.apply_smoke(config) if args["smoke"] else config
