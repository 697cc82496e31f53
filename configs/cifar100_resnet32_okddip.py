"""OKDDip, branch-based ResNet-32, 4 students (3 peers + leader), CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_okddip.py --workdir=runs/c100_r32_okddip

Paper (Table 1): leader top-1 error 25.63% (74.37% accuracy), best test epoch of 3 runs. Variants:
`:network` uses 4 independent networks (paper: 25.40%), `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, network=False, smoke=False)
    config = common.get_base_config()
    if args["network"]:
        config.model.sharing = "network"
    return common.apply_smoke(config) if args["smoke"] else config
