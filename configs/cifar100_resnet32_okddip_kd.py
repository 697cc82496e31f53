"""OKDDip+KD: the OKDDip group plus a frozen bottleneck ResNet-110 teacher for every student,
CIFAR-100: the paper's recipe.

    okddip train --config=configs/cifar100_resnet32_okddip_kd.py --workdir=runs/c100_r32_okddip_kd

Paper (Table 6): the leader's top-1 error 24.92% (75.08% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). `okddip
train` first trains the teacher (`configs/cifar100_resnet110_baseline.py`) into <workdir>/teacher/,
unless `--config.kd.teacher=WORKDIR` names a finished one; `:smoke` is a seconds-long check that
trains a tiny teacher first.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar100", "okddip_kd", arg)
