"""Where a report's figures were computed: the libraries and the CPU kernels they ran on.

The same data, flags and seeds give the same report bit for bit on one machine, but not
on another kind of CPU: numpy picks its SIMD kernels (exp, log, sums) by what the CPU
offers, OpenBLAS its BLAS kernels, and the last bits that differ are carried through
ALS, the scorer's fit and the trees' splits. On a small log the figures then move
within their intervals (docs/training.md, "Reproducing the tables"). Each report says
where it was computed, so that a figure is compared with one of the same environment.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

# The libraries whose arithmetic the report's numbers go through.
PACKAGES = ("numpy", "scipy", "implicit", "lightgbm", "faiss-cpu")
# CPU flags that decide which SIMD paths numpy, OpenBLAS and FAISS take on x86-64.
CPU_FLAGS = ("avx2", "fma", "avx512f")


def numeric_environment() -> dict:
    """The versions, CPU and kernels of this process, as plain JSON values."""
    return {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu": _cpu(),
        "numpy_simd": _numpy_simd(),
        "blas": _blas(),
    }


def describe(env: dict) -> str:
    """One line for report.md."""
    pkgs = ", ".join(f"{name} {v}" for name, v in env.get("packages", {}).items() if v)
    cpu = env.get("cpu", {})
    flags = ", ".join(cpu.get("flags", [])) or "no AVX2"
    blas = "; ".join(f"{b['library']} {b['version']} ({b['kernels']})" for b in env.get("blas", []))
    simd = ", ".join(env.get("numpy_simd", [])) or "baseline only"
    return (
        f"{pkgs}; Python {env.get('python', '?')}; CPU {cpu.get('model', '?')} ({flags}); "
        f"numpy's SIMD kernels: {simd}; BLAS: {blas or 'not loaded'}"
    )


def differences(saved: dict | None, current: dict) -> list[str]:
    """What differs between the environment a report records and this one, one line per
    field ("numpy: 2.4.6 there, 2.4.7 here"); a report from before environments were
    recorded says so. Empty: the same environment."""
    if not saved:
        return ["the saved report does not record its environment (trained before it was recorded)"]
    out = []
    for key in ("python", "numpy_simd", "blas"):
        if saved.get(key) != current.get(key):
            out.append(f"{key}: {saved.get(key)} there, {current.get(key)} here")
    for name in sorted(set(saved.get("packages", {})) | set(current.get("packages", {}))):
        there, here = saved.get("packages", {}).get(name), current.get("packages", {}).get(name)
        if there != here:
            out.append(f"{name}: {there} there, {here} here")
    if saved.get("cpu") != current.get("cpu"):
        out.append(f"cpu: {saved.get('cpu')} there, {current.get('cpu')} here")
    return out


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:  # not Linux: the model as platform says it, no flags
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def _numpy_simd() -> list[str]:
    """The SIMD targets numpy's dispatcher found on this CPU (beyond its build baseline)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # a numpy that moved them: the versions above still say which numpy
        return []
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def _blas() -> list[dict]:
    """Each BLAS library loaded in this process and the kernels it chose for this CPU."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            "library": f"{info.get('internal_api')} ({info.get('prefix')})",
            "version": info.get("version"),
            "kernels": info.get("architecture"),
            "threads": info.get("num_threads"),
        }
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
