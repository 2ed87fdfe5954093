"""Facts about this machine that every result names, and this process's memory.

One reader of each: cores, CPU model and SIMD flags, GPUs (nvidia-smi), library versions,
resident-set size now and at its peak.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Libraries whose versions every result names.
LIBRARIES = (
    "tensorflow",
    "keras",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tf2onnx",
    "tensorrt",
    "opencv-python-headless",
    "imagecodecs",
    "pillow",
    "cityscapesscripts",
)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: SIMD features worth naming: they decide the float32 peak of a CPU.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_details() -> dict[str, Any]:
    """x86 family/model numbers and the SIMD flags from /proc/cpuinfo ({} elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    fields = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "simd": [f for f in SIMD_FLAGS if f in flags],
    }


def gpus() -> list[str]:
    """GPU names, driver and memory from nvidia-smi, or [] when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        text = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the benchmarks use (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, Any]:
    """What every result names: CPU model, cores, memory, GPUs, OS, library versions, load."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "cores": available_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpus": gpus(),
        "jetson": Path("/etc/nv_tegra_release").exists(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "load_average_1_5_15min": load,
        "versions": library_versions(),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line: CPU model, cores, memory, GPU (or 'no GPU')."""
    gpu = "; ".join(info.get("gpus") or []) or "no GPU"
    details = info.get("cpu_details") or {}
    cpu = info["cpu"]
    if details.get("family"):
        simd = "/".join(details.get("simd") or []) or "no AVX"
        cpu += f" (x86 family {details['family']} model {details['model']}, {simd})"
    return f"{cpu}, {info['cores']} cores, {info.get('memory_gb')} GB RAM, {gpu}"


def measured_on(info: dict[str, Any]) -> str:
    """A short line for tables and plots: which machine measured the figures, CPU or GPU, and
    that it is not the Jetson the suite deploys to (unless it is one)."""
    gpus_found = info.get("gpus") or []
    gpu = f"GPU {gpus_found[0].split(',')[0].strip()}" if gpus_found else "no GPU"
    if info.get("jetson"):
        return f"measured on a Jetson ({info['cpu']}, {gpu})"
    which = "not a Jetson" if gpus_found else "this CPU, not a Jetson"
    return f"measured on {info['cpu']}, {info['cores']} cores, {gpu} ({which})"


# --------------------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM, or ru_maxrss) in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def current_rss_mb() -> float:
    """This process's current resident set in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()
