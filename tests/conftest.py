"""Shared fixtures: one small synthetic Cityscapes tree per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SYNTHETIC_SIZE = (128, 256)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Cityscapes-format tree: 4 train and 3 val images (128x256) and 2 coarse train_extra."""
    from datasets.synthetic import generate

    root = tmp_path_factory.mktemp("cityscapes")
    generate(root, num=4, size=SYNTHETIC_SIZE, seed=1, splits=("train",))
    generate(root, num=3, size=SYNTHETIC_SIZE, seed=2, splits=("val",), num_coarse=2)
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (for running the CLIs as subprocesses)."""
    return REPO


@pytest.fixture(scope="session")
def run_cli(repo_root: Path):
    """Run a script or `-m module` of the repository as a user would; return the finished process.

    `run_cli("evaluate.py", "--synthetic", ...)` or `run_cli("-m", "datasets.synthetic", ...)`;
    output is captured as text, the working folder is the repository root, a run that outlives
    `timeout` seconds fails the test instead of hanging it, and `proc.error_lines` holds the
    `error: ...` lines of stderr.
    """

    def run(
        script: str,
        *args: str,
        timeout: float = 300,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        target = [script, *args] if script == "-m" else [str(repo_root / script), *args]
        proc = subprocess.run(
            [sys.executable, *target],
            cwd=repo_root,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        proc.error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        return proc

    return run


@pytest.fixture(scope="session")
def slurm_cluster(repo_root: Path) -> Path:
    """A running one-node SLURM cluster (scripts/slurm_cluster.sh), or the test is skipped
    saying why; with SEGBENCH_REQUIRE_SLURM=1 (CI, which starts the cluster) it fails instead.

    A cluster already running is used as it is; otherwise, as root, it is started from the
    installed packages (installing them only when SEGBENCH_REQUIRE_SLURM=1).
    """
    script = repo_root / "scripts" / "slurm_cluster.sh"
    required = os.environ.get("SEGBENCH_REQUIRE_SLURM") == "1"
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, timeout=60)
    if status.returncode == 0:
        return script
    if os.geteuid() != 0:
        reason = "no SLURM cluster running, and starting one needs root: bash " + str(script)
    else:
        env = dict(os.environ, **({} if required else {"SLURM_CLUSTER_NO_INSTALL": "1"}))
        start = subprocess.run(
            ["bash", str(script), "start"], capture_output=True, text=True, timeout=900, env=env
        )
        if start.returncode == 0:
            return script
        lines = (start.stderr or start.stdout).strip().splitlines() or ["no output"]
        reason = f"scripts/slurm_cluster.sh start failed: {lines[-1]}"
    if required:
        pytest.fail(reason + " (SEGBENCH_REQUIRE_SLURM=1)")
    pytest.skip(reason)
