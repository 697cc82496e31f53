"""OKDDip, branch-based ResNet-32, 4 students (3 peers + leader), CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_okddip.py --workdir=runs/c100_r32_okddip

Paper (Table 2): the leader's top-1 error 25.63% (74.37% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). Network-
based (`:network`, 4 independent networks): 25.40%. The ablations of Table 5 (error %):
--config.okddip.attention=random (28.24), =self ("entropy", 26.71), =mean (26.35), =identity
("asymmetry", 26.05), and --config.okddip.two_level=False (27.79); with two_level=False, the peers'
ensemble is Table 4's OKDDip column (23.45). `:smoke` is a seconds-long check.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar100", "okddip", arg, variants=("smoke", "network"))
