"""KD: one ResNet-32 distilling from a frozen bottleneck ResNet-110 teacher (alpha 1, T 3),
CIFAR-10: the paper's recipe.

    okddip train --config=configs/cifar10_resnet32_kd.py --workdir=runs/c10_r32_kd

Paper (Table 6): the student's top-1 error 6.08% (93.92% accuracy), mean of 3 runs at the best test
epoch; okddip_tf reports it as `method_accuracy` in metrics.json (final and best epoch). `okddip
train` first trains the teacher (`configs/cifar10_resnet110_baseline.py`) into <workdir>/teacher/,
unless `--config.kd.teacher=WORKDIR` names a finished one; `:smoke` is a seconds-long check that
trains a tiny teacher first.
"""

from okddip_tf import config as common


def get_config(arg=None):
    return common.paper_config("cifar10", "kd", arg, num_students=1)
