"""A hyperparameter search around the paper's recipe (OKDDip, branch-based ResNet-32, CIFAR-100).

    okddip tune --config=configs/cifar100_resnet32_tune.py --workdir=runs/c100_r32_tune
    okddip train --config=runs/c100_r32_tune/best_config.py --workdir=runs/c100_r32_best

12 random trials, each the first 30 epochs of the 300-epoch recipe, trained on 45,000 training
images and scored by the leader's accuracy on the other 5,000 (the test split is never used to
choose). It searches the temperature around the paper's 3, the ramp-up length, the group size
and the attention's projection size; the learning rate stays at the paper's 0.1, because a
30-epoch trial sees none of the drops at epochs 150 and 225 and would favour rates that only
look good early. The search resumes when rerun after an interruption; best_config.py then
trains the chosen values for the full 300 epochs. `:smoke` is a seconds-long 2-trial search.
"""

from okddip_tf import config as common


def get_config(arg=None):
    args = common.parse_arg(arg, smoke=False)
    config = common.get_base_config()
    config.tuner.algorithm = "random"
    config.tuner.max_trials = 12
    config.tuner.epochs = 30
    config.tuner.temperature = (2.0, 5.0)
    config.tuner.learning_rate = ()
    config.tuner.rampup_length = (20, 40, 80)
    config.tuner.num_students = (3, 4, 5)
    config.tuner.attention_dim = (4, 8, 16)
    return common.apply_smoke(config) if args["smoke"] else config
