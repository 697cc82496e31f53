"""Checks `okddip` runs on a config before it loads any data, so a wrong value fails in seconds.

Each raises `errors.ConfigError` (a ValueError) with the message of the check it mirrors.
"""

import contextlib

from okddip_tf import errors


@contextlib.contextmanager
def config_errors():
    """Reports a ValueError of a check that reads only the config as a ConfigError.

    Use it only around such checks: a ValueError from anything else may be a bug.
    """
    try:
        yield
    except errors.UserError:
        raise
    except ValueError as error:
        raise errors.ConfigError(str(error)) from error


def check_config(config):
    """The config's own value checks (no TensorFlow needed)."""
    from okddip_tf.config import validate_config  # pylint: disable=import-outside-toplevel

    validate_config(config)


def check_model(config):
    """The model section and the method's options: a known backbone (or a model file that is
    there, a factory that imports), option values the method takes, and a group it can train
    (the method is built as the run builds it, without its teacher)."""
    # pylint: disable=import-outside-toplevel
    from okddip_tf import builders, models

    if models.names_own_model(config.model.backbone):
        with config_errors():  # a .keras file that is there, a factory that imports
            models.keras_backbone.check_own_model(config.model.backbone)
    else:
        models.get_backbone(config.model.backbone)
    builders.backbone_options(config.model)  # e.g. a model.dropout the backbone has no use for
    with config_errors():
        builders.build_method(config)


def check_search(config):
    """`okddip tune`'s own settings and search space, as the search itself checks them."""
    from okddip_tf import tuner  # pylint: disable=import-outside-toplevel

    with config_errors():
        tuner.check_tuner_config(config)
        tuner.search_space(config)
        tuner.make_objective(config, tuner.search_space(config))
