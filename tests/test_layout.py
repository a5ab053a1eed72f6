"""The import graph shows the architecture: core below, service and training beside each
other on top of it, no module-level import cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "service", "training")
# What each package may import from the project (besides itself).
ALLOWED = {"core": set(), "service": {"core", "nichefeed"}, "training": {"core"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules imported by a file (module-level statements only if asked)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES + ("nichefeed",)}


def project_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_core_service_and_training_import_only_what_is_below_them():
    wrong = []
    for path in project_files():
        own = module_name(path).split(".")[0]
        for target in imports(path, top_level_only=False):
            top = target.split(".")[0]
            if top != own and top not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_no_module_level_import_cycles():
    files = {module_name(p): p for p in project_files()}
    graph = {
        name: {m for m in imports(path, top_level_only=True) if m in files and m != name}
        for name, path in files.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_serving_needs_neither_java_nor_pyspark():
    """The Spark engine is training's optional extra: not among the service's dependencies,
    and nothing the service imports loads it (or Arrow, or the JVM bridge)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "pyspark" not in base and "pyarrow" not in base
    assert any(d.startswith("pyspark") for d in project["optional-dependencies"]["spark"])
    assert (
        packages_loaded_by(
            "service.__main__", "service.app", "service.server", among=("pyspark", "py4j", "pyarrow", "training")
        )
        == []
    )
    # make serve also runs `python -m training ensure` (generate, train with the default
    # engine, publish): that may load training and Arrow, never Spark or its JVM bridge.
    assert (
        packages_loaded_by(
            "training.__main__", "training.train", "training.publish", "training.synthetic", among=("pyspark", "py4j")
        )
        == []
    )


def test_the_workers_supervisor_loads_none_of_the_serving_libraries():
    """With --workers N the entry process only supervises and serves /metrics; every
    library it loads is memory a 2-worker tree pays once more (redis-py alone was 17 MB)."""
    heavy = ("redis", "hiredis", "numpy", "grpc", "faiss", "lightgbm")
    assert packages_loaded_by("service.__main__", "service.workers", among=heavy) == []


def packages_loaded_by(*modules: str, among: tuple[str, ...]) -> list[str]:
    """Which of `among` (top-level packages) importing `modules` loads, in a fresh interpreter."""
    import json
    import subprocess
    import sys

    probe = (
        f"import json, sys, {', '.join(modules)}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(among)!r})))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _requirements(extras: str, optional: dict[str, list[str]]) -> set[str]:
    """The distribution names a set of extras pulls in, through nichefeed[...] self-references."""
    out: set[str] = set()
    for extra in extras.split(","):
        for req in optional[extra.strip()]:
            if req.startswith("nichefeed["):
                out |= _requirements(req[len("nichefeed[") : req.index("]")], optional)
            else:
                out.add(re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower())
    return out


def _make_dry_run(target: str, **variables: str) -> str:
    """What a fresh clone's `make target` would run (-B: as if nothing were installed)."""
    import subprocess

    args = ["make", "-n", "-B", target, *(f"{k}={v}" for k, v in variables.items())]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _pip_extras(target: str, **variables: str) -> list[str]:
    """The extras of every `pip install -e '.[...]'` that run would make."""
    return re.findall(r"pip install .*-e '\.\[([^\]]*)\]'", _make_dry_run(target, **variables))


def test_make_serve_installs_neither_pyspark_nor_java_and_make_test_installs_both():
    """The Makefile's install sets, read from what make would run on a fresh clone."""
    import tomllib

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve = _pip_extras("serve")
    assert serve, "make serve runs no pip install"
    for extras in serve:
        needs = _requirements(extras, optional)
        assert "pyspark" not in needs, extras
        assert {"implicit", "grpcio-tools"} <= needs, extras  # it trains the default world and builds stubs
    assert "default-jre" not in _make_dry_run("serve")
    for target, variables in (("test", {}), ("train", {"ENGINE": "spark"})):
        assert any("pyspark" in _requirements(e, optional) for e in _pip_extras(target, **variables)), target
        assert "default-jre-headless" in _make_dry_run(target, **variables), target


def test_the_images_stub_generator_is_the_proto_extra():
    """The Dockerfile's build stage installs grpcio-tools by hand (not the project's deps):
    the same requirement as pyproject's [proto], so the two cannot drift."""
    import tomllib

    proto = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["proto"]
    assert len(proto) == 1 and proto[0].startswith("grpcio-tools")
    assert f'pip install --no-cache-dir "{proto[0]}"' in (ROOT / "Dockerfile").read_text()
