"""Choosing a tf.distribute strategy: one process, several GPUs of one node, or several nodes.

The cluster of a multi-worker run comes from TF_CONFIG (set it yourself, one JSON per process)
or from SLURM (`srun python train.py ...`: every task reads SLURM_PROCID, SLURM_STEP_NODELIST,
SLURM_STEP_TASKS_PER_NODE and SLURM_STEP_NUM_TASKS through `SlurmClusterResolver`).
The strategy must be created before TensorFlow touches any device, so call `make_strategy`
first thing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from collections.abc import Mapping

import tensorflow as tf

from utils.errors import BadInput

__all__ = ["MODES", "DistributeInfo", "make_cluster_resolver", "make_strategy", "resolve_mode"]

MODES = ("auto", "none", "mirrored", "multiworker")
#: First port of the workers SLURM starts on each node (the next task on a node takes +1).
DEFAULT_PORT_BASE = 8888
PORT_BASE_ENV = "SEGBENCH_PORT_BASE"


@dataclasses.dataclass(frozen=True)
class DistributeInfo:
    """Where this process stands in the run."""

    mode: str  # "none", "mirrored" or "multiworker"
    num_workers: int
    worker_index: int
    num_replicas: int  # replicas in sync over all workers
    cluster_source: str | None = None  # "TF_CONFIG", "SLURM" or None

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes checkpoints, logs and results; the others only compute."""
        return self.worker_index == 0


def _tf_config_workers(environ: Mapping[str, str]) -> int:
    """Number of workers (plus chief) in TF_CONFIG, 0 when it is unset; BadInput if unreadable."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return 0
    try:
        config = json.loads(text)
        cluster = config["cluster"]
        return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            f"TF_CONFIG is not a valid cluster description ({exc}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            f'"index": 0}}}}; got {text[:200]!r}'
        ) from None


def _slurm_tasks(environ: Mapping[str, str]) -> int:
    """Number of tasks of the current SLURM job step, 0 outside a SLURM step."""
    value = environ.get("SLURM_STEP_NUM_TASKS") or ""
    if "SLURM_PROCID" not in environ or not value.strip():
        return 0
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"SLURM_STEP_NUM_TASKS must be an integer, got {value!r}") from None


def resolve_mode(
    mode: str = "auto", environ: Mapping[str, str] | None = None, num_gpus: int | None = None
) -> str:
    """Turn --distribute into "none", "mirrored" or "multiworker".

    auto: multiworker when TF_CONFIG or a SLURM step names more than one worker, else mirrored
    when the node has more than one GPU, else none.
    """
    environ = os.environ if environ is None else environ
    if mode not in MODES:
        raise BadInput(f"unknown distribution mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if _tf_config_workers(environ) > 1 or _slurm_tasks(environ) > 1:
        return "multiworker"
    if num_gpus is None:
        num_gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if num_gpus > 1 else "none"


def _gpus_per_node(environ: Mapping[str, str]) -> int:
    """GPUs of this node as SLURM or CUDA_VISIBLE_DEVICES say, else nvidia-smi's count, else 0."""
    for name in ("SLURM_GPUS_ON_NODE",):
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi"):
        # TensorFlow only on the paths that need it
        from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver

        try:
            return slurm_cluster_resolver.get_num_gpus()
        except RuntimeError:
            return 0
    return 0


def make_cluster_resolver(
    environ: Mapping[str, str] | None = None, port_base: int | None = None
) -> tuple[tf.distribute.cluster_resolver.ClusterResolver, str]:
    """The cluster resolver of a multi-worker run and where it came from ("TF_CONFIG"/"SLURM").

    TF_CONFIG wins when both are set. Raises BadInput when neither describes a cluster.
    """
    environ = os.environ if environ is None else environ
    if _tf_config_workers(environ) > 0:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver(), "TF_CONFIG"
    if _slurm_tasks(environ) > 0:
        if port_base is None:
            port_base = int(environ.get(PORT_BASE_ENV, DEFAULT_PORT_BASE))
        gpus = _gpus_per_node(environ)
        try:
            if gpus:
                resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
                    port_base=port_base, gpus_per_node=gpus
                )
            else:
                # The resolver pairs every task of a node with a slot of GPUs; CPU-only nodes
                # get one dummy slot per task, and CUDA_VISIBLE_DEVICES is left alone.
                resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
                    port_base=port_base, gpus_per_node=4096, gpus_per_task=1, auto_set_gpu=False
                )
            resolver.cluster_spec()
        except (RuntimeError, ValueError) as exc:
            raise BadInput(
                f"cannot read the SLURM job step ({exc}); run one task per node or per GPU, "
                f"e.g. srun --ntasks-per-node=1 (this node has {gpus} GPUs)"
            ) from None
        return resolver, "SLURM"
    raise BadInput(
        "--distribute multiworker needs a cluster: set TF_CONFIG in every process, or start "
        "the processes with srun inside a SLURM allocation (see scripts/slurm_train.sh)"
    )


def make_strategy(
    mode: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> tuple[tf.distribute.Strategy, DistributeInfo]:
    """Create the strategy for --distribute `mode` (call before any other TensorFlow work).

    Args:
        mode: "auto", "none" (TensorFlow's default strategy: one device), "mirrored" (all GPUs
            of this node) or "multiworker" (MultiWorkerMirroredStrategy over TF_CONFIG/SLURM).
        environ: environment that decides the mode (default: os.environ); the resolvers
            themselves read os.environ.
    """
    environ = os.environ if environ is None else environ
    mode = resolve_mode(mode, environ)
    if mode == "none":
        strategy = tf.distribute.get_strategy()
        return strategy, DistributeInfo("none", 1, 0, 1)
    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return strategy, DistributeInfo("mirrored", 1, 0, strategy.num_replicas_in_sync)
    resolver, source = make_cluster_resolver(environ)
    cluster = resolver.cluster_spec().as_dict()
    num_workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    if num_workers < 2:
        raise BadInput(
            f"--distribute multiworker needs 2 or more workers, but {source} names "
            f"{num_workers}; start more tasks (e.g. sbatch -N1 --ntasks-per-node=2 ... or "
            "srun -n 2) or train in one process with --distribute auto"
        )
    _check_port_free(cluster[task_type][task_id], source, environ)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    # With a "chief" job the chief is index 0 and the workers follow it.
    index = task_id + (1 if task_type == "worker" and "chief" in cluster else 0)
    if task_type == "chief":
        index = 0
    return strategy, DistributeInfo(
        "multiworker", num_workers, index, strategy.num_replicas_in_sync, source
    )


def _check_port_free(address: str, source: str, environ: Mapping[str, str]) -> None:
    """BadInput naming the port when this worker's `host:port` is already taken on this host.

    TensorFlow's gRPC server would either fail with a long C++ error or, where the other
    listener also sets SO_REUSEPORT (another TensorFlow job's worker), share the port with it and
    talk to the wrong job.
    """
    port_text = address.rpartition(":")[2]
    try:
        port = int(port_text)
    except ValueError:
        raise BadInput(
            f"{source} gives this worker the address {address!r}, not host:port"
        ) from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            probe.bind(("", port))
        except OSError as exc:
            hint = (
                f"set {PORT_BASE_ENV} to the first port of a free range (now "
                f"{environ.get(PORT_BASE_ENV, DEFAULT_PORT_BASE)}; each task of a node takes "
                "the next port)"
                if source == "SLURM"
                else "give this worker a free port in TF_CONFIG"
            )
            raise BadInput(
                f"port {port} of this worker ({address}, from {source}) is taken on this host "
                f"({exc.strerror}); {hint}"
            ) from None
