"""Training through a real SLURM scheduler: `sbatch scripts/slurm_train.sh` on the one-node
cluster of scripts/slurm_cluster.sh (fixture `slurm_cluster`; CI starts it).

Every job asks for 2 tasks of 1 CPU without GPUs, so the jobs run one after the other on a
2-core machine. Figures and the reasoning behind the tolerances are in docs/training.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_training import last_weights, weights_arrays

pytestmark = pytest.mark.slow

MODEL = "separable_unet"
#: SGD (Adam's first steps are sign-like, so rounding flips whole updates of near-zero
#: gradients), batch statistics over both workers, no precise-BN pass (it averages per-replica
#: statistics), the same learning rate whatever the replica count.
COMMON = [
    "-t",
    "128,256",
    "--optimizer",
    "sgd",
    "-l",
    "0.01",
    "--lr-scaling",
    "none",
    "--sync-bn",
    "--precise-bn",
    "0",
    "--log-every",
    "1",
]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def free_port_pair() -> int:
    """A port p with p and p + 1 free (the two tasks of a node take consecutive ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("", 0))
            base = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no pair of free ports")


def job_env(root: Path, out: Path, epochs: int, port: int | None = None) -> dict[str, str]:
    """The environment sbatch exports to the job (none of an enclosing job's SLURM_ variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TF_CONFIG"))}
    env.update(
        MODEL=MODEL,
        BATCH="1",
        EPOCHS=str(epochs),
        CITYSCAPES_DATASET=str(root),
        OUTPUT=str(out),
        PYTHON=sys.executable,
        SEGBENCH_PORT_BASE=str(port or free_port_pair()),
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def submit(repo: Path, env: dict[str, str], log: Path, *args: str, tasks: int = 2) -> str:
    """sbatch scripts/slurm_train.sh on one node, `tasks` tasks of 1 CPU, no GPU; the job id."""
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-N1",
            f"--ntasks-per-node={tasks}",
            "--cpus-per-task=1",
            "--gpus-per-node=0",
            "--time=10:00",
            "-o",
            str(log),
            "scripts/slurm_train.sh",
            *args,
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job(job_id: str) -> dict[str, str]:
    """The job's fields from `scontrol show job` (JobState, Restarts, ExitCode, ...)."""
    text = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(check, timeout: float, what: str, job_id: str, log: Path):
    """Poll `check()` until it returns something true; fail naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], timeout=30)
    tail = log.read_text()[-3000:] if log.exists() else "no job log"
    pytest.fail(f"job {job_id}: no {what} within {timeout} s ({job(job_id)}); log:\n{tail}")


def wait_end(job_id: str, log: Path, timeout: float = 300) -> dict[str, str]:
    return wait_for(
        lambda: (info := job(job_id)).get("JobState") in ENDED and info, timeout, "end", job_id, log
    )


def wait_line(job_id: str, log: Path, text: str, timeout: float = 300, after: int = 0) -> str:
    """The job log from byte `after` on, once it holds `text`."""

    def seen():
        content = log.read_text()[after:] if log.exists() else ""
        return content if text in content else ""

    return wait_for(seen, timeout, repr(text), job_id, log)


def train_pids(out: Path) -> dict[int, int]:
    """SLURM_PROCID -> pid of the train.py processes writing to `out`."""
    pids = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"train.py") for a in cmdline) and str(out).encode() in cmdline:
            for item in environ:
                if item.startswith(b"SLURM_PROCID="):
                    pids[int(item.split(b"=")[1])] = int(proc.name)
    return pids


def update_error(init: dict, ours: dict, theirs: dict) -> float:
    """|ours - theirs| / |theirs - init| over all weights: how far apart two runs' updates are."""
    delta = np.concatenate([(theirs[k] - init[k]).ravel() for k in sorted(init)])
    apart = np.concatenate([(ours[k] - theirs[k]).ravel() for k in sorted(init)])
    return float(np.linalg.norm(apart) / np.linalg.norm(delta))


@pytest.fixture(scope="module")
def init_weights(tmp_path_factory) -> Path:
    """Initial weights shared by the runs that are compared."""
    import keras

    from models import build_model

    path = tmp_path_factory.mktemp("init") / "init.weights.h5"
    keras.utils.set_random_seed(5)
    build_model(MODEL, (128, 256, 3)).save_weights(path)
    return path


def test_two_tasks_train_as_one_process_with_the_global_batch(
    slurm_cluster, repo_root, synthetic_root, tmp_path, run_cli, init_weights
):
    """Two workers from SlurmClusterResolver end with identical weights, those of one process
    with the same global batch; only the chief writes; the job ends COMPLETED."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    args = [*COMMON, "--steps-per-epoch", "2", "--weights", str(init_weights)]
    job_id = submit(repo_root, job_env(synthetic_root, out, 1), log, *args)
    info = wait_end(job_id, log)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-3000:]
    assert re.search(r"tasks 2 \(2 per node\), GPUs per task 0 \(CPU only\), port base \d+", text)
    assert "command: " in text and "--distribute multiworker" in text
    assert "multi-worker run: 2 workers from SLURM, 2 replicas" in text
    assert "global batch 2 (1 x 2 replicas), 2 steps/epoch" in text
    assert "all 2 replicas end with identical weights" in text
    assert text.count("epoch 1/1: loss") == 1  # the chief alone prints
    assert "\x1b" not in text and "\r" not in text  # a job log, not a terminal's progress bar
    # Only the chief writes: one checkpoint, one log row, nothing half-written or duplicated.
    assert len(list(out.glob("weights-*.weights.h5"))) == 1
    assert len((out / "log.csv").read_text().splitlines()) == 2
    assert not list(out.glob(".*"))

    single = tmp_path / "single"
    proc = run_cli("train.py", "-m", MODEL, "-p", str(synthetic_root), "-b", "2", "-e", "1",
                   *args, "--output-dir", str(single))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"epoch 1/1(?: step 1/2)?: loss ([\d.]+)", text)]
    reference = [
        float(x) for x in re.findall(r"epoch 1/1(?: step 1/2)?: loss ([\d.]+)", proc.stdout)
    ]
    assert len(losses) == len(reference) == 2
    np.testing.assert_allclose(losses, reference, rtol=1e-3)
    # The same images, crops and global batches; the updates agree to 0.08% (measured; the
    # per-layer differences, a few %, come from max-pooling ties of uint8 images that rounding
    # breaks differently when the batch statistics are summed over two processes).
    init = weights_arrays(init_weights)
    assert update_error(init, last_weights(out), last_weights(single)) < 0.01


def test_preempted_job_saves_its_step_requeues_and_continues(
    slurm_cluster, repo_root, synthetic_root, tmp_path, init_weights
):
    """scancel --signal=TERM --full in the middle of epoch 3 of 5: the step's state is saved,
    the job requeues itself, continues from the next step and ends with the weights of a job
    that was never interrupted."""
    args = [*COMMON, "--steps-per-epoch", "4", "--weights", str(init_weights)]
    out, log = tmp_path / "run", tmp_path / "job.out"
    job_id = submit(repo_root, job_env(synthetic_root, out, 5), log, *args)
    wait_line(job_id, log, "epoch 3/5 step 1/4:")
    subprocess.run(["scancel", "--signal=TERM", "--full", job_id], check=True, timeout=30)
    sent = time.monotonic()
    text = wait_line(job_id, log, "requeueing job", timeout=90)
    stopped_after = time.monotonic() - sent
    assert stopped_after < 60, text[-3000:]
    print(f"saved and requeueing {stopped_after:.1f} s after scancel --signal=TERM")
    meta = json.loads((out / "preempted.state" / "meta.json").read_text())
    stopped = meta["step_in_epoch"]
    assert meta["epoch"] == 2 and 1 <= stopped < 4, meta
    assert f"stopped by SIGTERM at epoch 3, step {stopped} of 4" in text
    assert "slurm_train: SIGTERM: passing it to the tasks" in text

    restart = len(text)  # the requeued run appends to the same log
    info = wait_end(job_id, log, timeout=400)
    print(f"requeued job ended {time.monotonic() - sent:.1f} s after the signal")
    again = log.read_text()[restart:]
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", again[-3000:]
    assert "(restart 1)" in again
    assert f"at epoch 3, step {stopped + 1} of 4" in again
    assert f"epoch 3/5 step {stopped}/4:" not in again
    assert "epoch 5/5: loss" in again
    assert not (out / "preempted.state").exists()
    assert json.loads((out / "checkpoints.json").read_text())["epoch"] == 5

    reference, ref_log = tmp_path / "reference", tmp_path / "reference.out"
    ref_id = submit(repo_root, job_env(synthetic_root, reference, 5), ref_log, *args)
    assert wait_end(ref_id, ref_log)["JobState"] == "COMPLETED", ref_log.read_text()[-3000:]
    ours, theirs = last_weights(out), last_weights(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-6, err_msg=key)


def test_one_task_and_a_taken_port_fail_at_once_with_one_line(
    slurm_cluster, repo_root, synthetic_root, tmp_path
):
    out, log = tmp_path / "one", tmp_path / "one.out"
    started = time.monotonic()
    job_id = submit(repo_root, job_env(synthetic_root, out, 1), log, *COMMON, tasks=1)
    info = wait_end(job_id, log, timeout=120)
    text = log.read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --distribute multiworker needs 2 or more workers, but SLURM names 1; start more "
        "tasks (e.g. sbatch -N1 --ntasks-per-node=2 ... or srun -n 2) or train in one process "
        "with --distribute auto"
    ]
    assert not out.exists() or not list(out.iterdir())

    port = free_port_pair()
    out, log = tmp_path / "port", tmp_path / "port.out"
    with socket.socket() as taken:
        taken.bind(("", port))
        taken.listen()
        job_id = submit(repo_root, job_env(synthetic_root, out, 1, port=port), log, *COMMON)
        info = wait_end(job_id, log, timeout=120)
    text = log.read_text()
    assert info["JobState"] == "FAILED", text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text[-2000:]
    assert f"port {port} of this worker" in errors[0] and "is taken on this host" in errors[0]
    assert f"set SEGBENCH_PORT_BASE to the first port of a free range (now {port};" in errors[0]
    assert time.monotonic() - started < 240  # both, TensorFlow's start-up included


def test_a_worker_killed_mid_training_ends_the_job_with_the_checkpoint_intact(
    slurm_cluster, repo_root, synthetic_root, tmp_path
):
    out, log = tmp_path / "run", tmp_path / "job.out"
    job_id = submit(repo_root, job_env(synthetic_root, out, 5), log, *COMMON,
                    "--steps-per-epoch", "4")  # fmt: skip
    wait_line(job_id, log, "epoch 2/5 step 1/4:")
    saved = json.loads((out / "checkpoints.json").read_text())
    assert saved["epoch"] == 1
    pids = train_pids(out)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    info = wait_end(job_id, log, timeout=120)
    ended_after = time.monotonic() - killed
    text = log.read_text()
    assert info["JobState"] == "FAILED", text[-3000:]
    assert ended_after < 90, text[-3000:]  # srun --kill-on-bad-exit, not the time limit
    assert re.search(r"error: .*task 1: Killed", text), text[-3000:]  # srun names it
    # and the chief says what happened, in one line
    stopped = [line for line in text.splitlines() if line.startswith("error: worker 0 of 2")]
    assert len(stopped) == 1 and "another worker of the run stopped" in stopped[0], text[-3000:]
    assert "connection reset" in stopped[0].lower() or "abort" in stopped[0].lower()
    assert "epoch 5/5" not in text
    # The chief's last checkpoint is whole and still the one the index names.
    index = json.loads((out / "checkpoints.json").read_text())
    assert index["epoch"] >= 1 and (out / index["last"]).is_file()
    assert last_weights(out)
    assert not list(out.glob(".*tmp*"))
