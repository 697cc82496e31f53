"""Quickstart: a small OKDDip group on real CIFAR-100 that trains on a 2-core CPU in minutes.

    okddip train --config=configs/quickstart.py --workdir=runs/quickstart

A 4-student branch-based ResNet-20 group (3 peers + leader) for 3 epochs on 25,000 training
images, evaluated on the whole test split, then the leader is exported (SavedModel + TFLite). It
shows the whole pipeline, not the paper's accuracy (chance is 1%); the README has the measured
time and accuracy.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.model.backbone = "resnet20"
    config.data.train_examples = 25_000
    config.data.shuffle_buffer = 25_000
    config.train.epochs = 3
    config.optim.drop_epochs = ()
    config.rampup.length = 3
    config.export.after_training = True
    return common.apply_smoke(config) if args["smoke"] else config
