"""Ind: 4 branch-based ResNet-32 students, each with its own cross-entropy, no distillation.

    okddip train --config=configs/cifar100_resnet32_independent.py --workdir=runs/c100_r32_ind

Paper (Table 1, "Ind"): top-1 error 27.84% (the authors report the mean of the students).
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.model.method = "independent"
    return common.apply_smoke(config) if args["smoke"] else config
