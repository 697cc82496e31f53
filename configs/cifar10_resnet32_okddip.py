"""OKDDip, branch-based ResNet-32, 4 students (3 peers + leader), CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_okddip.py --workdir=runs/c10_r32_okddip

Paper (Table 1): leader top-1 error 5.58% (94.42% accuracy); `:network` (4 independent networks)
5.62%. Offline machines need CIFAR-10 prepared in TFDS_DATA_DIR first (`tfds build cifar10` on a
machine with a network, then copy the folder). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, network=False, smoke=False)
    config = common.get_base_config()
    config.data.name = "cifar10"
    if args["network"]:
        config.model.sharing = "network"
    return common.apply_smoke(config) if args["smoke"] else config
