"""Resident memory of a server's process tree (psutil, from the kernel's smaps).

RSS counts a shared page in every process that maps it, so the sum of RSS over two
workers double-counts the memory-mapped bundle; PSS splits each shared page between the
processes mapping it, so the sum of PSS is what the tree really costs. Private (USS) is
what a process would give back if it exited: the cost of one more worker. The bundle's
big files (post vectors, FAISS index) are also reported per file: how much of each is
resident, and whether it is mapped from the file (shared page cache) at all.
"""

from __future__ import annotations

from pathlib import Path

import psutil

MB = 2**20


def _process(pid: int, bundle_dir: Path | None) -> dict:
    p = psutil.Process(pid)
    full = p.memory_full_info()  # rss, shared, uss, pss
    maps = p.memory_maps(grouped=True)
    anon = sum(m.anonymous for m in maps)
    files: dict[str, dict[str, int]] = {}
    if bundle_dir is not None:
        prefix = str(Path(bundle_dir).resolve())
        for m in maps:
            if m.path.startswith(prefix):
                f = files.setdefault(Path(m.path).name, {"rss": 0, "pss": 0})
                f["rss"] += m.rss
                f["pss"] += m.pss
    return {
        "pid": pid,
        "cmd": " ".join(p.cmdline()[:4]),
        "rss_mb": full.rss / MB,
        "pss_mb": full.pss / MB,
        "private_mb": full.uss / MB,
        "shared_mb": (full.rss - full.uss) / MB,
        "anon_mb": anon / MB,
        "bundle_files": {
            k: {"rss_mb": round(v["rss"] / MB, 1), "pss_mb": round(v["pss"] / MB, 1)}
            for k, v in sorted(files.items())
            if v["rss"] >= MB
        },
    }


def measure(pids: list[int], bundle_dir: Path | None = None) -> dict:
    procs = []
    for pid in pids:
        try:
            procs.append(_process(pid, bundle_dir))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs:
        for k in ("rss_mb", "pss_mb", "private_mb", "shared_mb", "anon_mb"):
            p[k] = round(p[k], 1)
        p["role"] = role(p, procs)
    total = {k: round(sum(p[k] for p in procs), 1) for k in ("rss_mb", "pss_mb", "private_mb", "shared_mb", "anon_mb")}
    return {"processes": procs, "total": total, "n_processes": len(procs)}


def role(p: dict, procs: list[dict]) -> str:
    """What the process is to the service: the one server, the --workers supervisor (the
    tree's root), one of its workers (service/workers.py WORKER_BOOT), else its command."""
    if "worker_main" in p["cmd"]:
        return "worker"
    if p is procs[0] and " -m service" in p["cmd"]:
        return "supervisor" if len(procs) > 1 else "server"
    return p["cmd"][-40:]


def bundle_file_sizes(bundle_dir: Path) -> dict[str, float]:
    return {
        p.name: round(p.stat().st_size / MB, 1)
        for p in sorted(Path(bundle_dir).iterdir())
        if p.is_file() and p.stat().st_size >= MB
    }
