"""Backbones: a backbone knows how to build a trunk and a per-student head.

Registered backbones are looked up by name, optionally with options (`get_backbone("resnet32",
split_stage=2, batchnorm="keras")`); `from_keras` turns the user's own functional Keras
classifier (or a `.keras` file) into a backbone, its weights kept or drawn afresh (`transfer.py`
moves weights, frozen layers and the classifier into the students' copies). A backbone serialises to a JSON-able dict (`Backbone.get_config`)
that `backbone_from_config` rebuilds, so a saved group records exactly what it was built from.
The `Backbone` type lives in `backbone.py`, the registry in `registry.py`; this package imports
the backbone modules, which register their networks there.
"""

from okddip_tf.models.backbone import Backbone
from okddip_tf.models.keras_backbone import from_keras
from okddip_tf.models.registry import (BACKBONES, COMMON_OPTIONS, backbone_from_config,
                                       backbone_options, check_weights, get_backbone,
                                       names_own_model, register_backbone, resolve_backbone)

# Registration happens on import; importing them here means callers never have to.
from okddip_tf.models import resnet_cifar  # noqa: F401
from okddip_tf.models import densenet, resnet_imagenet, vgg  # noqa: F401

__all__ = ["BACKBONES", "COMMON_OPTIONS", "Backbone", "backbone_from_config", "backbone_options",
           "check_weights", "from_keras", "get_backbone", "names_own_model", "register_backbone",
           "resolve_backbone"]
