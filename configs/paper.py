"""Any cell of the paper's experiments: dataset, method, backbone, group size and sharing.

    okddip train --config=configs/paper.py:dataset=cifar100,method=one,backbone=vgg16,students=4 \
        --workdir=runs/c100_vgg16_one

The paper's recipe (okddip_tf.config.paper_config) with the named backbone; `okddip reproduce`
runs its cells through this file (okddip_tf/reproduce/manifest.py lists them), adding the budget
and the method options as --config overrides. Arguments: dataset (cifar10 | cifar100), method (a
name in okddip_tf.methods.METHODS), backbone (a registered backbone), students (m), sharing
(branch | network), smoke (a seconds-long run with the tiny backbone, for tests).
dataset=imagenet2012 takes the paper's ImageNet recipe (okddip_tf.config.imagenet_recipe, Table 3).
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, dataset="cifar100", method="okddip", backbone="resnet32",
                            students=4, sharing="branch", smoke=False)
    config = common.paper_config(args["dataset"], args["method"],
                                 "smoke" if args["smoke"] else None,
                                 num_students=args["students"], sharing=args["sharing"])
    if args["dataset"] == "imagenet2012" and not args["smoke"]:
        common.imagenet_recipe(config)
    if not args["smoke"]:  # a smoke run keeps the tiny backbone
        config.model.backbone = args["backbone"]
    return config
