"""The devices a run trains on: accelerators, mixed precision and the
distribution strategies (`--distribute`): tf.distribute's
MirroredStrategy and MultiWorkerMirroredStrategy on tensorflow,
keras.distribution.DataParallel on jax, in one process or across several
(`join_processes`). `run_scope` puts a run under them."""

import contextlib
import os

from kerascnn.config.spelling import spell, spell_set
from kerascnn.errors import KerasCNNError


def accelerator_available():
    """True when the active Keras backend sees a GPU or TPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if backend == "jax":
        import jax

        return any(d.platform != "cpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def check_distribute(distribute, backend):
    """`distribute` (one of DISTRIBUTE, as FitConfig checked) runs on `backend`."""
    needs, other = ("jax", "mirrored") if distribute == "data-parallel" else ("tensorflow", "data-parallel")
    if backend != needs:
        raise KerasCNNError(f"{spell('distribute')} {distribute} needs the {needs} backend (active: {backend})"
                            + (f"; use {spell('distribute')} {other} on {backend}" if backend in ("jax", "tensorflow")
                               else ""))


_MULTI_WORKER = []  # the process's MultiWorkerMirroredStrategy: TensorFlow allows one, made before any op


def cluster_task():
    """This process's place in the cluster TF_CONFIG names: (task type,
    index, number of workers, whether a "chief" task is named), or a
    KerasCNNError saying what is wrong."""
    import json

    text = os.environ.get("TF_CONFIG")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
               '"index": 0}}\'')
    if not text:
        raise KerasCNNError(f"{spell('distribute')} multi-worker reads the cluster from TF_CONFIG, which is not set; "
                            f"on each machine set e.g. {example}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        if kind not in ("chief", "worker") or not 0 <= index < len(cluster[kind]):
            raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError):
        raise KerasCNNError(f"TF_CONFIG is not a cluster with this process's task in it: {text[:200]!r}; "
                            f"expected e.g. {example}") from None
    return kind, index, workers, "chief" in cluster


def is_chief(distribute):
    """Whether this process writes the run: always, except under
    multi-worker training on a worker other than the cluster's chief (the
    "chief" task, else worker 0) and under multi-process data-parallel
    training on a process other than 0."""
    if distribute == "data-parallel":
        return process_part(distribute)[0] == 0
    if distribute != "multi-worker":
        return True
    kind, index, _, has_chief = cluster_task()
    return kind == "chief" or index == 0 and not has_chief


# keras.distribution.initialize reads these: the coordinator's (process 0's) host:port, or every process's
PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")


def process_cluster():
    """The processes of a multi-process data-parallel run as Keras'
    variables (PROCESS_VARIABLES) name them: (coordinator address, number
    of processes, this process's id); None when none is set; a
    KerasCNNError saying what is wrong with a malformed setting."""
    given = {name: os.environ.get(name, "").strip() for name in PROCESS_VARIABLES}
    if not any(given.values()):
        return None
    addresses_name, count_name, index_name = PROCESS_VARIABLES
    example = f"{addresses_name}=host0:12345 {count_name}=2 {index_name}=0 (1 on the other machine)"
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise KerasCNNError(f"{' and '.join(missing)} not set: a multi-process run reads all three of "
                            f"{', '.join(PROCESS_VARIABLES)}, e.g. {example}")
    count, index = given[count_name], given[index_name]
    if not count.isdigit() or int(count) < 1:
        raise KerasCNNError(f"{count_name}={count} is not a number of processes (a whole number, at least 1); "
                            f"e.g. {example}")
    count = int(count)
    if not index.isdigit() or int(index) >= count:
        raise KerasCNNError(f"{index_name}={index} is not one of the {count_name}={count} processes: "
                            f"number them 0 to {count - 1}, the coordinator 0")
    index = int(index)
    addresses = given[addresses_name].split(",")
    if len(addresses) > 1 and len(addresses) != count or not all(
            host and port.isdigit() for host, _, port in (a.strip().rpartition(":") for a in addresses)):
        raise KerasCNNError(f"{addresses_name}={given[addresses_name]} is not process 0's host:port (or one "
                            f"host:port per process, {count} in all); e.g. {example}")
    return addresses[0].strip(), count, index


def join_processes(distribute):
    """Join the other processes of a multi-process `--distribute
    data-parallel` run (keras.distribution.initialize, which starts
    jax.distributed) when Keras' variables name them: first, before JAX
    makes any array. Nothing when they are not set, or once joined."""
    cluster = process_cluster()
    if cluster is None:
        return
    import keras

    backend = keras.backend.backend()
    if backend != "jax" or distribute != "data-parallel":
        raise KerasCNNError(f"{', '.join(PROCESS_VARIABLES)} start a multi-process run, which needs "
                            f"{spell_set('distribute', 'data-parallel')} on the jax backend (here: "
                            f"{spell('distribute')} {distribute or 'not set'}, backend {backend}); "
                            f"unset them to train in one process")
    import jax

    if jax.distributed.is_initialized():
        return
    address, count, index = cluster
    try:
        keras.distribution.initialize(address, count, index)
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise KerasCNNError(f"process {index} of {count} could not join the run at {address}: {first} (start "
                            f"it in a fresh process, before anything uses JAX)") from None


def process_part(distribute):
    """(this process's index, number of processes): the share of every
    global batch this process feeds under data-parallel training,
    keras.distribution laying a batch's rows over the processes' devices in
    process order; (0, 1) otherwise."""
    if distribute != "data-parallel":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def multi_worker_strategy():
    """The process's tf.distribute.MultiWorkerMirroredStrategy (made at the
    first call, which must come before TensorFlow runs anything: fit makes
    it first)."""
    if not _MULTI_WORKER:
        cluster_task()
        import tensorflow as tf

        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def distribution_scope(distribute, echo=None):
    """A context manager that builds and trains under `distribute`:
    "mirrored" is tf.distribute.MirroredStrategy over every visible GPU (or
    every logical CPU device when there is no GPU); "multi-worker" is
    tf.distribute.MultiWorkerMirroredStrategy over the cluster of TF_CONFIG;
    "data-parallel" is keras.distribution.DataParallel over every device
    JAX sees (checked against the backend by the run's plan). Returns
    (context manager, number of replicas)."""
    import contextlib

    import keras

    if not distribute:
        return contextlib.nullcontext(), 1
    if distribute == "multi-worker":
        strategy = multi_worker_strategy()
        if echo:
            kind, index, workers, _ = cluster_task()
            echo(f"distribute: MultiWorkerMirroredStrategy, {kind} {index} of {workers} workers, "
                 f"{strategy.num_replicas_in_sync} replicas in all"
                 + ("" if is_chief(distribute) else "; the chief writes the run"))
        return strategy.scope(), strategy.num_replicas_in_sync
    if distribute == "mirrored":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        if echo:
            echo(f"distribute: MirroredStrategy over {strategy.num_replicas_in_sync} device(s): {', '.join(devices)}")
        return strategy.scope(), strategy.num_replicas_in_sync
    devices = keras.distribution.list_devices()
    previous = keras.distribution.distribution()
    data_parallel = keras.distribution.DataParallel(devices=devices)
    data_parallel.auto_shard_dataset = False  # each process feeds its own share (inputs.TrainingBatches `part`)

    @contextlib.contextmanager
    def scope():
        keras.distribution.set_distribution(data_parallel)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)

    if echo:
        index, count = process_part(distribute)
        echo(f"distribute: keras.distribution.DataParallel over {len(devices)} device(s)"
             + (f", process {index} of {count}" + ("" if index == 0 else "; process 0 writes the run")) * (count > 1))
    return scope(), len(devices)


@contextlib.contextmanager
def run_scope(settings, echo=None):
    """Where a run builds its model and trains: every generator seeded from
    `settings.seed`, under mixed precision (the policy restored after) and
    the distribution strategy. Yields the number of replicas."""
    import keras

    from kerascnn.runtime.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # Keras' seeding would import it on jax and torch too
    keras.utils.set_random_seed(settings.seed)
    restore_policy = _mixed_precision(settings.mixed_precision)
    try:
        scope, replicas = distribution_scope(settings.distribute, echo)
        with scope:
            yield replicas
    finally:
        if restore_policy is not None:
            keras.config.set_dtype_policy(restore_policy)


def accelerator_capability():
    """The (major, minor) CUDA compute capability of the first GPU the
    backend sees, (99, 0) for a TPU, None without either."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    if backend == "jax":
        import jax

        device = next((d for d in jax.devices() if d.platform != "cpu"), None)
        if device is None:
            return None
        if device.platform == "tpu":
            return (99, 0)
        major, _, minor = str(getattr(device, "compute_capability", "0.0")).partition(".")
        return int(major), int(minor or 0)
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("TPU"):
            return (99, 0)
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    return None


def mixed_policy():
    """The mixed-precision policy for this accelerator: bfloat16 compute
    where it runs natively (Ampere, compute capability 8.0, and later; TPUs),
    else float16 with loss scaling (Keras wraps the optimizer)."""
    capability = accelerator_capability()
    return "mixed_bfloat16" if capability and capability >= (8, 0) else "mixed_float16"


def _mixed_precision(enabled):
    """Set `mixed_policy()` when `enabled` (resolved: only with an
    accelerator); returns the policy to restore afterwards, or None."""
    import keras

    if not enabled:
        return None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_policy())
    return previous


def sharded(settings, dataset):
    """`dataset` as a multi-worker run splits it: every worker makes the
    same batches and trains on its share of each (tf.data's DATA sharding,
    which AUTO would fall back to with a warning); unchanged otherwise."""
    if settings.distribute != "multi-worker":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def data_parallel_devices(settings):
    """The devices `--distribute data-parallel` splits each batch over, those
    of every process (1 otherwise): a training epoch's short last batch keeps
    a multiple of them, an evaluation's is padded with samples of weight 0."""
    if settings.distribute != "data-parallel":
        return 1
    import keras

    return len(keras.distribution.list_devices())


def reduce_scalars_across_workers():
    """Keras 3.15 all-reduces each replica's logs (a scalar loss, scalar
    metrics) across the workers of a MultiWorkerMirroredStrategy with
    axis=0, which a scalar does not have (tensorflow/tensorflow#72388):
    reduce them with axis=None, the mean over every replica, instead."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "kerascnn", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.kerascnn = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def symbolic_build_locally(model, batches):
    """Build the model's loss and metrics from one batch's shapes before
    fit, which under MultiWorkerMirroredStrategy would first all-reduce
    a whole distributed batch for them and fails (Keras 3.15,
    keras-team/keras#20585), and tell fit and evaluate not to."""
    first = next(iter(batches))
    model._symbolic_build(data_batch=first)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

