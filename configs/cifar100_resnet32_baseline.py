"""Baseline: one ResNet-32 trained with cross-entropy only, CIFAR-100, the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_baseline.py --workdir=runs/c100_r32_baseline

Paper (Table 1): top-1 error 28.76% (71.24% accuracy).
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.model.method = "baseline"
    config.model.num_students = 1
    return common.apply_smoke(config) if args["smoke"] else config
