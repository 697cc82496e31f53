"""The paper's architectures: exact parameter counts, split points, options and training steps.

The expected counts are those of the authors' PyTorch definitions (plain network = the deployed
leader; "GL" = their branch-based OKDDip group with m = 4). Where this package departs from the
authors on purpose (DenseNet: each branch owns its third dense block, decision 16; ResNet-34 has no
branch model in their code) or where an option moves the split, the expected count is derived
here from the layer shapes, independently of the Keras code.
"""

import keras
import numpy as np
import pytest

from okddip_tf import GroupModel, builders
from okddip_tf.config import get_base_config
from okddip_tf.initializers import torch_linear_initializer
from okddip_tf.models import BACKBONES, get_backbone, resolve_backbone
from okddip_tf.optim import CoupledSGD

M = 4


def num_trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def attention_params(feature_dim):
    return 2 * feature_dim * (feature_dim // 8)  # W_L and W_E, no bias


# Counts of PyTorch layers, for the derived expectations.
def bn(c):
    return 2 * c


def conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def linear(cin, cout):
    return cin * cout + cout


def basic_stage(cin, planes, blocks, stride):
    total = 0
    for i in range(blocks):
        c = cin if i == 0 else planes
        total += conv(c, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
        if i == 0 and (stride != 1 or c != planes):
            total += conv(c, planes, 1) + bn(planes)
    return total


def dense_block(cin, layers=6, growth=12, bn_size=4):
    total = 0
    for i in range(layers):
        c = cin + i * growth
        total += bn(c) + conv(c, bn_size * growth, 1) + bn(bn_size * growth)
        total += conv(bn_size * growth, growth, 3)
    return total


# (backbone, classes, plain, GL): the issue's table, measured on the authors' definitions.
PAPER_COUNTS = [
    ("resnet32", 10, 466_906, 1_530_872),
    ("resnet32", 100, 472_756, 1_554_272),
    ("resnet110_bottleneck", 10, 1_147_738, 3_781_496),
    ("wrn20_8_bottleneck", 10, 6_848_090, 22_519_416),
    pytest.param("wrn20_8_bottleneck", 100, 6_871_220, 22_611_936, marks=pytest.mark.slow),
    ("vgg16", 10, 15_253_578, 38_157_928),
    pytest.param("vgg16", 100, 15_299_748, 38_342_608, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backbone,classes,plain,gl", PAPER_COUNTS)
def test_branch_group_and_leader_match_the_authors_counts(backbone, classes, plain, gl):
    group = GroupModel(backbone=backbone, num_classes=classes, num_students=M)
    assert num_trainable(group.leader) == plain
    assert num_trainable(group) == gl


def densenet_gl(classes):
    """Plain DenseNet-40-12 plus, per extra branch, a third dense block, final BN and classifier."""
    per_branch = dense_block(60) + bn(132) + linear(132, classes)
    return (M - 1) * per_branch + attention_params(132)


@pytest.mark.parametrize("classes,plain", [(10, 176_122), (100, 188_092)])
def test_densenet_branches_own_their_third_dense_block(classes, plain):
    group = GroupModel(backbone="densenet40_12", num_classes=classes, num_students=M)
    assert num_trainable(group.leader) == plain
    assert num_trainable(group) == plain + densenet_gl(classes)
    # The heads are distinct: each holds its own dense block (not one shared object).
    block_weights = [{id(v) for v in head.trainable_weights} for head in group.heads]
    assert all(not a & b for i, a in enumerate(block_weights) for b in block_weights[i + 1:])


def test_resnet34_imagenet_leader_and_two_stage_branches():
    group = GroupModel(backbone="resnet34_imagenet", num_classes=1000, num_students=M,
                       image_shape=(224, 224, 3))
    plain = 21_797_672
    assert num_trainable(group.leader) == plain
    per_branch = basic_stage(128, 256, 6, 2) + basic_stage(256, 512, 3, 2) + linear(512, 1000)
    assert num_trainable(group) == plain + (M - 1) * per_branch + attention_params(512)


@pytest.mark.parametrize("backbone,classes,plain", [
    ("densenet40_12", 100, 188_092),
    pytest.param("wrn20_8_bottleneck", 10, 6_848_090, marks=pytest.mark.slow)])
def test_network_groups_hold_m_plain_networks(backbone, classes, plain):
    group = GroupModel(backbone=backbone, num_classes=classes, num_students=M, sharing="network")
    feature_dim = get_backbone(backbone).feature_dim
    assert num_trainable(group.leader) == plain
    assert num_trainable(group) == M * plain + attention_params(feature_dim)


def test_split_stage_moves_the_branch_point():
    plain = 472_756
    group = GroupModel(backbone=get_backbone("resnet32", split_stage=2), num_classes=100)
    per_branch = basic_stage(16, 32, 5, 2) + basic_stage(32, 64, 5, 2) + linear(64, 100)
    assert num_trainable(group.leader) == plain
    assert num_trainable(group) == plain + (M - 1) * per_branch + attention_params(64)
    assert get_backbone("resnet32", split_stage=2).trunk_channels == 16
    assert get_backbone("resnet34_imagenet").trunk_channels == 128  # last two stages per student
    with pytest.raises(ValueError, match="split_stage of 'resnet32' must be an integer in 1..3"):
        get_backbone("resnet32", split_stage=4)
    with pytest.raises(ValueError, match="has no option"):
        get_backbone("resnet32", dropout=0.1)


def test_options_survive_save_and_load(tmp_path):
    backbone = get_backbone("tiny", split_stage=2, batchnorm="keras")
    group = GroupModel(backbone=backbone, num_classes=10, image_shape=(16, 16, 3))
    path = str(tmp_path / "group.keras")
    group.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.backbone == backbone and loaded.backbone.get_config() == {
        "name": "tiny", "options": {"split_stage": 2, "batchnorm": "keras"}}
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), group.predict(images, verbose=0),
                               atol=1e-6)


def batchnorms(group):
    found = []
    for model in group.trunks + group.heads:
        found += [layer for layer in model.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    return found


@pytest.mark.parametrize("style,momentum,epsilon", [(None, 0.9, 1e-5), ("keras", 0.99, 1e-3)])
def test_batchnorm_flag_from_the_config(style, momentum, epsilon):
    config = get_base_config()
    config.model.backbone, config.model.batchnorm = "densenet40_12", style or "pytorch"
    info = type("Info", (), dict(num_classes=10, image_shape=(32, 32, 3), pixel_mean=(0,) * 3,
                                 pixel_std=(1,) * 3))
    layers = batchnorms(builders.build_group(config, info, builders.build_method(config)))
    assert layers and {(bn_.momentum, bn_.epsilon) for bn_ in layers} == {(momentum, epsilon)}
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        get_backbone("vgg16", batchnorm="torch")


def test_decoupled_weight_decay_flag():
    """One step with a zero gradient: decoupled decay shrinks w by lr*wd*w; coupled L2 adds wd*w
    to the gradient before Nesterov momentum, w <- w - lr*(1 + mu)*wd*w on the first step."""
    config = get_base_config()
    lr, wd, mu = 0.1, 5e-4, 0.9
    results = {}
    for style in ("coupled", "decoupled"):
        config.optim.weight_decay = style
        optimizer = builders.build_optimizer(config.optim, steps_per_epoch=10)
        variable = keras.Variable(np.full((3,), 2.0, np.float32))
        optimizer.apply([keras.ops.zeros((3,))], [variable])
        results[style] = (type(optimizer), variable.numpy())
    assert results["coupled"][0] is CoupledSGD
    np.testing.assert_allclose(results["coupled"][1], 2.0 - lr * (1 + mu) * wd * 2.0, rtol=1e-6)
    assert results["decoupled"][0] is keras.optimizers.SGD
    np.testing.assert_allclose(results["decoupled"][1], 2.0 - lr * wd * 2.0, rtol=1e-6)


def test_every_registered_backbone_resolves_and_serialises():
    for name, backbone in BACKBONES.items():
        assert resolve_backbone(backbone.get_config()) == backbone, name
    assert resolve_backbone("vgg16", split_stage=4).get_config() == {
        "name": "vgg16", "options": {"split_stage": 4}}


def one_step(group, image_shape, batch=2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch,) + image_shape).astype("uint8")
    labels = rng.integers(0, group.num_classes, batch).astype("int32")
    # Eagerly: tracing and optimising the graph of a whole DenseNet group takes about a minute on
    # two cores; the compiled step itself is tested on the tiny backbone (test_group.py).
    group.compile(optimizer=CoupledSGD(0.01), run_eagerly=True)
    before = [v.numpy().copy() for v in group.trainable_weights]
    logs = group.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, group.trainable_weights)]
    return logs, changed


@pytest.mark.parametrize("backbone,shape,sharing", [
    ("densenet40_12", (16, 16, 3), "branch"),
    pytest.param("densenet40_12", (16, 16, 3), "network", marks=pytest.mark.slow),
    ("vgg16", (32, 32, 3), "branch"),
    ("wrn20_8_bottleneck", (16, 16, 3), "branch"),
    ("resnet34_imagenet", (32, 32, 3), "branch"),
    pytest.param("resnet34_imagenet", (32, 32, 3), "network", marks=pytest.mark.slow),
])
def test_one_training_step(backbone, shape, sharing):
    keras.utils.set_random_seed(0)
    group = GroupModel(backbone=backbone, num_classes=10, num_students=3, sharing=sharing,
                       image_shape=shape)
    _, changed = one_step(group, shape)
    assert all(changed), "every trainable weight (trunk, heads, attention) gets an update"


def test_torch_linear_initializer_draws_uniform_within_one_over_sqrt_fan_in():
    fan_in = 64
    limit = 1.0 / np.sqrt(fan_in)
    first = np.asarray(torch_linear_initializer(fan_in)((200, 100)))
    second = np.asarray(torch_linear_initializer(fan_in)((200, 100)))
    assert np.abs(first).max() <= limit
    # U(-l, l) has mean 0 and standard deviation l / sqrt(3); 20000 draws pin both closely.
    assert abs(first.mean()) < 0.02 * limit
    assert first.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    assert not np.array_equal(first, second)  # a new instance per weight: new values


def dense_layers(model):
    return {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Dense)}


def test_vgg16_linear_layers_start_from_the_authors_normal_init():
    """vgg.py:58-60 / vgg_one.py:83-85: nn.init.normal_(weight, 0, 0.01), bias 0.

    A 512x512 kernel has 262,144 draws, so its sample std is within about 0.2% of 0.01 (the
    classifier's 51,200: 0.4%); 3% separates it clearly from PyTorch's default uniform
    (std 1/sqrt(3 * 512) = 0.0255) and from Keras' Glorot-uniform (0.0442 for 512x512).
    """
    keras.utils.set_random_seed(0)
    head = get_backbone("vgg16").build_head("head", 100, False)
    found = dense_layers(head)
    assert sorted(found) == ["classifier", "fc0", "fc1"]
    kernels = []
    for layer in found.values():
        kernel = np.asarray(layer.kernel)
        assert abs(kernel.mean()) < 1e-3
        assert kernel.std() == pytest.approx(0.01, rel=0.03), layer.name
        np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)
        kernels.append(kernel)
    assert not np.array_equal(kernels[0], kernels[1])  # fc0 and fc1: their own draws


@pytest.mark.parametrize("sharing,method", [("branch", "okddip"), ("network", "okddip"),
                                            ("branch", "one")])
def test_vgg16_method_linears_follow_the_authors_init(sharing, method):
    """W_L and W_E in the branch model: N(0, 0.01) (vgg_GL.py:54-55, 65-66); in the network
    model PyTorch's default U(+-1/sqrt(512)) (MultiNet.py:28-29); ONE's VGG gate N(0, 0.01) and
    zero bias (vgg_one.py:71, 83-85). 512x64 draws pin the std within about 0.5%, the gate's
    512x3 within about 2%: 10% tolerance."""
    keras.utils.set_random_seed(0)
    group = GroupModel(backbone="vgg16", num_classes=10, num_students=3, sharing=sharing,
                       method=method, image_shape=(32, 32, 3))
    if method == "one":
        dense = dense_layers(group.gate)["dense"]
        assert np.asarray(dense.kernel).std() == pytest.approx(0.01, rel=0.1)
        np.testing.assert_array_equal(np.asarray(dense.bias), 0.0)
        return
    attention = group.attention
    for weight in (attention.query.kernel, attention.key.kernel):
        values = np.asarray(weight)
        if sharing == "branch":
            assert values.std() == pytest.approx(0.01, rel=0.1)
        else:
            assert np.abs(values).max() <= 1 / np.sqrt(512)
            assert values.std() == pytest.approx(1 / np.sqrt(3 * 512), rel=0.1)
    assert not np.array_equal(np.asarray(attention.query.kernel), np.asarray(attention.key.kernel))


def vgg_dropout_rates(config):
    info = type("Info", (), dict(num_classes=10, image_shape=(32, 32, 3)))
    backbone = builders.build_backbone(config, info)
    head = resolve_backbone(backbone).build_head("head", 10, False)
    return {layer.rate for layer in head.layers if isinstance(layer, keras.layers.Dropout)}


@pytest.mark.parametrize("method,sharing,students,rate", [
    ("baseline", "branch", 1, 0.0),  # train.py:49,275: --dropout default 0
    ("kd", "branch", 1, 0.0),  # train_kd.py:52,299
    ("dml", "network", 4, 0.0),  # train_DML.py:46,374; DML.py:20
    ("okddip", "network", 4, 0.0),  # train_GL.py:48,422; MultiNet.py:22
    ("okddip", "branch", 4, 0.5),  # vgg_GL.py:20,46,49
    ("one", "branch", 4, 0.5),  # vgg_one.py:63,66 nn.Dropout()
    ("independent", "branch", 4, 0.5),
])
def test_vgg16_dropout_defaults_to_the_authors_value_for_the_group(method, sharing, students,
                                                                     rate):
    config = get_base_config()
    config.model.backbone, config.model.method = "vgg16", method
    config.model.sharing, config.model.num_students = sharing, students
    assert config.model.dropout is None  # auto
    assert vgg_dropout_rates(config) == {rate}
    config.model.dropout = 0.25  # an explicit value wins
    assert vgg_dropout_rates(config) == {0.25}


def test_model_dropout_is_refused_where_it_does_nothing():
    from okddip_tf import preflight
    from okddip_tf.config import validate_config
    from okddip_tf.errors import ConfigError

    config = get_base_config()
    config.model.dropout = 0.5  # resnet32 has no dropout
    info = type("Info", (), dict(num_classes=10, image_shape=(32, 32, 3)))
    with pytest.raises(ConfigError, match="model.dropout=0.5 applies to backbones with dropout"):
        builders.build_backbone(config, info)
    with pytest.raises(ConfigError, match="model.dropout=0.5 applies"):  # before any data loads
        preflight.check_model(config)
    assert builders.build_backbone(get_base_config(), info) == "resnet32"  # unset: untouched
    config.model.backbone, config.model.dropout = "vgg16", 1.0
    with pytest.raises(ConfigError, match=r"model.dropout must be in \[0, 1\)"):
        validate_config(config)
