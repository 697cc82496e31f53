"""The paper's KD teacher: the bottleneck ResNet-110 baseline (1.17M parameters), CIFAR-10.

    okddip train --config=configs/cifar10_resnet110_baseline.py --workdir=runs/c10_r110

Paper (Table 6, "Teacher"): top-1 error 5.27%. The KD and OKDDip+KD configs train it first when
`kd.teacher` is empty. `:smoke` is a seconds-long check (tiny backbone).
"""

from okddip_tf import config as common


def get_config(arg=None):
    config = common.paper_config("cifar10", "baseline", arg, num_students=1)
    if config.model.backbone == "resnet32":
        config.model.backbone = "resnet110_bottleneck"
    return config
