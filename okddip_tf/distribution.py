"""How training is distributed and set up on TensorFlow: tf.distribute strategy, multi-worker
chores (chief, shared workdir, sharding), precision policy, determinism.

`train.data.batch_size` is always the global batch: a strategy with r replicas gives each replica
batch_size / r examples, the group divides its loss by r (gradients are summed over replicas),
BatchNorm is synchronised across replicas (`model.sync_batchnorm="auto"`), and training batches
are all full (`drop_remainder`). So the updates do not depend on the number of replicas, up to
rounding. Checks that would otherwise fail late or silently live here (`check_strategy`).
"""

import contextlib
import os
import shutil

import keras

from okddip_tf import compat
from okddip_tf.errors import ConfigError, InputError

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu", "auto")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name, tpu=""):
    """Returns the tf.distribute strategy named by `train.strategy`.

    "auto" picks MirroredStrategy when more than one GPU is visible, else the default strategy.
    "mirrored" uses every GPU; on a machine without GPUs it uses every logical CPU device, so
    `tf.config.set_logical_device_configuration` (called before TensorFlow starts) can split one
    CPU into several replicas for testing; with one CPU device it has one replica.
    "multi_worker_mirrored" reads the cluster from the TF_CONFIG environment variable and must be
    made before TensorFlow runs any op (`train_and_evaluate` makes it first). "tpu" follows
    TensorFlow's documented TPUClusterResolver path; it is untested here (no TPU). Other
    backends (JAX) train on one device: see `OneDevice`.
    """
    if keras.backend.backend() != "tensorflow":
        return OneDevice.for_config(name)
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"Unknown train.strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(mirrored_devices())
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def mirrored_devices():
    """None (TF's default: all GPUs) when there are GPUs, else the logical CPU devices if > 1."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return cpus if len(cpus) > 1 else None


def check_strategy(strategy, batch_size, eval_batch_size, jit_compile, deterministic=False):
    """Fails before training, saying the fix, on settings a strategy cannot run correctly.

    - Batches must split evenly over the replicas: an uneven first batch crashes Keras' fit, and
      an uneven batch later weights the replicas' examples wrongly.
    - XLA (`jit_compile=True`) under a multi-replica strategy crashes (a resource on one replica's
      device read from another's); with op determinism on, Keras turns XLA off by itself.
    """
    replicas = strategy.num_replicas_in_sync
    sizes = (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size or batch_size))
    for key, size in sizes:
        if size % replicas:
            fits = max(replicas, size - size % replicas)
            raise ConfigError(
                f"{key}={size} is the global batch, split over the {replicas} replicas of "
                f"{type(strategy).__name__}: it must be divisible by {replicas} (e.g. {fits}) so "
                "that every replica gets the same number of examples.")
    if jit_compile and replicas > 1:
        raise ConfigError(
            f"train.jit_compile=True does not work under {type(strategy).__name__} with "
            f"{replicas} replicas: XLA-compiled steps fail reading variables placed on another "
            "replica's device (TensorFlow's known issue; TPUs compile with XLA anyway). Set "
            "--config.train.jit_compile=False.")
    if jit_compile and deterministic:
        raise ConfigError(
            "train.jit_compile=True with train.deterministic=True: Keras turns XLA off when op "
            "determinism is enabled. Set one of them to False.")


def is_chief(strategy):
    """Whether this process writes the run: always, except on a non-chief multi-worker task.

    TensorFlow's rule: the "chief" task if the cluster has one, else worker 0.
    """
    resolver = cluster_resolver(strategy)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def cluster_resolver(strategy):
    """The TF_CONFIG cluster of a MultiWorkerMirroredStrategy, else None (one process)."""
    if isinstance(strategy, OneDevice):
        return None
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy.cluster_resolver
    return None


@contextlib.contextmanager
def write_dir(workdir, strategy):
    """Where this process writes: `workdir` on the chief, a temporary folder elsewhere.

    TensorFlow's multi-worker pattern: every worker runs the same saves (they may need collective
    reads of distributed variables), the others into `<workdir>/workertemp_<task id>`, which is
    removed afterwards, so only the chief's checkpoint, history and metrics remain.
    """
    if is_chief(strategy):
        yield workdir
        return
    path = os.path.join(workdir, f"workertemp_{strategy.cluster_resolver.task_id}")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_same_on_workers(strategy, value, what):
    """Fails on every worker when the integer `value` differs between the workers.

    A worker that starts at another epoch than the chief would wait forever for its peers: the
    workers must agree before training. No-op without several workers.
    """
    resolver = cluster_resolver(strategy)
    if resolver is None or resolver.task_type is None:
        return
    import tensorflow as tf

    values = strategy.run(lambda: tf.constant([float(value), float(value) ** 2], tf.float64))
    total, squares = strategy.reduce("SUM", values, axis=None).numpy()
    replicas = strategy.num_replicas_in_sync
    if abs(replicas * squares - total**2) > 1e-6 * max(1.0, total**2):  # equal iff all equal
        raise InputError(
            f"The workers disagree on {what} (this one has {value}, the mean is "
            f"{total / replicas:g}). Every worker must see the chief's workdir (shared storage) "
            "to resume it; otherwise start a new run in a new --workdir.")


def enable_multi_worker_fit(model, strategy):
    """Works around two Keras 3.15 bugs that stop fit/evaluate under MultiWorkerMirroredStrategy.

    Both are upstream (keras-team/keras#20585, tensorflow/tensorflow#72388); no-op elsewhere.
    1. Before each fit/evaluate Keras all-reduces a first batch to build the model symbolically,
       and this strategy cannot reduce an (images, labels) tuple ("Attempt to convert a value
       (PerReplica ...) to a Tensor"). The group and its optimizer are built before fit, so that
       build has nothing to do: it is skipped on this model.
    2. Keras averages each step's logged scalars over the workers with `reduce(..., axis=0)`,
       which fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions").
       Scalars are averaged with axis=None instead (a process-wide patch of Keras' helper).
    """
    if cluster_resolver(strategy) is None:
        return
    if not (model.built and model.optimizer is not None and model.optimizer.built):
        raise ValueError("Build the model and its optimizer before fit under "
                         "MultiWorkerMirroredStrategy.")
    compat.skip_symbolic_build(model)
    compat.replace_reduce_per_replica(scalar_mean_over_workers)


def scalar_mean_over_workers(original):
    """Keras' `reduce_per_replica` with logged scalars averaged over the workers (axis=None)."""

    def reduce_per_replica(values, strategy, reduction):
        def reduce(value):
            if (reduction in ("auto", "mean") and getattr(value, "shape", None) is not None
                    and value.shape.rank == 0
                    and compat.collective_all_reduce_multi_worker(strategy)):
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    return reduce_per_replica


def shard_by_example(dataset):
    """The dataset with tf.data's DATA auto-shard policy, for global-batch semantics.

    Every worker builds the same global batches (the pipeline is deterministic given the seed)
    and keeps its own slice of each, so a step consumes exactly the batch that a single device
    would. The default (AUTO) would shard CIFAR's one record file by FILE: it fails with fewer
    files than workers, or gives workers other examples than a single-device run.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def set_precision(name):
    """Sets Keras' global dtype policy; logits and losses stay float32 inside the models."""
    if name not in PRECISIONS:
        raise ConfigError(f"Unknown train.precision {name!r}; choose one of {PRECISIONS}.")
    keras.mixed_precision.set_global_policy(name)


def set_determinism(seed, deterministic):
    """Seeds Python, NumPy and the backend; with `deterministic`, also TF's op determinism."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class OneDevice:
    """The strategy of backends other than TensorFlow: one process, one device, no replicas."""

    num_replicas_in_sync = 1

    @classmethod
    def for_config(cls, name):
        if name not in ("default", "auto"):
            raise ValueError(
                f"train.strategy={name!r} is a tf.distribute strategy, which needs the "
                f"TensorFlow backend; on KERAS_BACKEND={keras.backend.backend()} training runs "
                "on one device: use --config.train.strategy=default.")
        return cls()

    @staticmethod
    def scope():
        return contextlib.nullcontext()
