"""Resident memory of a server's process tree, from /proc.

RSS counts a shared page in every process that maps it, so the sum of RSS over two
workers double-counts the memory-mapped bundle; PSS splits each shared page between the
processes mapping it, so the sum of PSS is what the tree really costs. Private (USS) is
what a process would give back if it exited: the cost of one more worker. The bundle's
big files (post vectors, FAISS index) are also reported per file: how much of each is
resident, and whether it is mapped from the file (shared page cache) at all.
"""

from __future__ import annotations

from pathlib import Path

KB = 1024
_ROLLUP_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous")


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].rstrip(":") in _ROLLUP_FIELDS:
            out[parts[0].rstrip(":")] = int(parts[1]) * KB
    return out


def _file_mappings(pid: int, under: Path) -> dict[str, dict[str, int]]:
    """Rss/Pss of every mapping of a file under `under`, summed per file name."""
    prefix = str(under.resolve())
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if not parts[0].endswith(":"):  # a mapping header: address perms offset dev inode path
            current = parts[5] if len(parts) >= 6 and parts[5].startswith(prefix) else None
            if current:
                out.setdefault(Path(current).name, {"rss": 0, "pss": 0})
        elif current and parts[0] in ("Rss:", "Pss:"):
            out[Path(current).name][parts[0][:-1].lower()] += int(parts[1]) * KB
    return out


def _cmd(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(a.decode(errors="replace") for a in raw[:4] if a)
    except OSError:
        return "?"


def measure(pids: list[int], bundle_dir: Path | None = None) -> dict:
    procs = []
    for pid in pids:
        try:
            r = _rollup(pid)
            files = _file_mappings(pid, bundle_dir) if bundle_dir else {}
        except OSError:
            continue
        procs.append(
            {
                "pid": pid,
                "cmd": _cmd(pid),
                "rss_mb": r.get("Rss", 0) / 2**20,
                "pss_mb": r.get("Pss", 0) / 2**20,
                "private_mb": (r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / 2**20,
                "shared_mb": (r.get("Shared_Clean", 0) + r.get("Shared_Dirty", 0)) / 2**20,
                "anon_mb": r.get("Anonymous", 0) / 2**20,
                "bundle_files": {
                    k: {"rss_mb": round(v["rss"] / 2**20, 1), "pss_mb": round(v["pss"] / 2**20, 1)}
                    for k, v in sorted(files.items())
                    if v["rss"] >= 2**20
                },
            }
        )
    for p in procs:
        for k in ("rss_mb", "pss_mb", "private_mb", "shared_mb", "anon_mb"):
            p[k] = round(p[k], 1)
    total = {k: round(sum(p[k] for p in procs), 1) for k in ("rss_mb", "pss_mb", "private_mb", "shared_mb", "anon_mb")}
    return {"processes": procs, "total": total, "n_processes": len(procs)}


def bundle_file_sizes(bundle_dir: Path) -> dict[str, float]:
    return {
        p.name: round(p.stat().st_size / 2**20, 1)
        for p in sorted(Path(bundle_dir).iterdir())
        if p.is_file() and p.stat().st_size >= 2**20
    }
