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


def check_model(model):
    """The model section: a known backbone and method, and a group size the method takes."""
    # pylint: disable=import-outside-toplevel
    from okddip_tf import methods, models

    models.get_backbone(model.backbone)
    with config_errors():
        method = methods.get_method(model.method)
    if not method.min_students <= model.num_students <= method.max_students:
        raise errors.ConfigError(
            f"Method {model.method!r} needs num_students between {method.min_students} and "
            f"{method.max_students}, got {model.num_students}. Set --config.model.num_students "
            "(OKDDip's default is 4: 3 peers and a leader; 'baseline' uses 1).")


def check_search(config):
    """`okddip tune`'s own settings and search space, as the search itself checks them."""
    from okddip_tf import tuner  # pylint: disable=import-outside-toplevel

    with config_errors():
        tuner.check_tuner_config(config)
        tuner.search_space(config)
        tuner.make_objective(config, tuner.search_space(config))
