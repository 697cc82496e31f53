"""Quickstart: a small OKDDip group on real CIFAR-100 that trains on a 2-core CPU in minutes.

    okddip train --config=configs/quickstart.py --workdir=runs/quickstart

A 4-student branch-based ResNet-20 group (3 peers + leader) for 2 epochs on 20,000 training
images, evaluated on the whole test split. It shows the full pipeline, not the paper's accuracy:
the leader reaches about 15% top-1 (chance is 1%); see the README for the measured numbers.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.model.backbone = "resnet20"
    config.data.train_examples = 20_000
    config.data.shuffle_buffer = 20_000
    config.train.epochs = 2
    config.optim.drop_epochs = ()
    config.rampup.length = 2
    config.export.after_training = True
    return common.apply_smoke(config) if args["smoke"] else config
