"""Where and how training runs: tf.distribute strategy, precision policy, determinism (TF backend)."""

import keras

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu", "auto")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name, tpu=""):
    """Returns the tf.distribute strategy named by `train.strategy`.

    "auto" picks MirroredStrategy when more than one GPU is visible, else the default strategy.
    "multi_worker_mirrored" reads the cluster from the TF_CONFIG environment variable; "tpu"
    follows TensorFlow's documented TPUClusterResolver path (not testable without a TPU).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Unknown train.strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def set_precision(name):
    """Sets Keras' global dtype policy; logits and losses stay float32 inside the models."""
    if name not in PRECISIONS:
        raise ValueError(f"Unknown train.precision {name!r}; choose one of {PRECISIONS}.")
    keras.mixed_precision.set_global_policy(name)


def set_determinism(seed, deterministic):
    """Seeds Python, NumPy and the backend; with `deterministic`, also TF's op determinism."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
