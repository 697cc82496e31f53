"""OKDDip, ResNet-34 on ImageNet-2012, 4 students: the paper's ImageNet recipe (Table 3).

    okddip train --config=configs/imagenet_resnet34.py --workdir=runs/in_r34_okddip

Paper (Settings): SGD with Nesterov momentum 0.9, learning rate 0.1 divided by 10 at epochs 30 and
60 of 90, batch 256, weight decay 1e-4, 224x224 crops; branch-based students share all but the
last two stages of ResNet-34. Table 3 reports top-1 errors of 26.76% (baseline) and, for
OKDDip, 25.42% (network-based) and 25.60% (branch-based); the authors' repository has no
ImageNet branch model, so the branch split follows the paper's text (decision 17). The paper does not give an ImageNet ramp-up length; this config
keeps the CIFAR code's 80 epochs scaled to the 90-epoch schedule (24 epochs, the same fraction),
an assumption.

Data: tfds `imagenet2012`, prepared by you (manual download, see okddip_tf/data/imagenet.py), or
`:folder=/path/to/imagenet` for `<path>/train/<wnid>/*.JPEG` and `<path>/val/<wnid>/*.JPEG`.
Variants: `:network` uses 4 independent ResNet-34s; `:smoke` is a seconds-long check of the
pipeline and the training loop on CIFAR-100's encoded images (tiny backbone, 32x32 crops).
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, network=False, folder="", smoke=False)
    config = common.imagenet_recipe(common.get_base_config())
    if args["network"]:
        config.model.sharing = "network"
    if args["folder"]:
        config.data.source, config.data.directory = "folder", args["folder"]
        config.data.eval_split = "val"
    if args["smoke"]:
        common.apply_smoke(config)
        config.data.name, config.data.eval_split, config.data.image_size = "cifar100", "test", 32
    return config
