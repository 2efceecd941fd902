"""Enforce the import structure of design.md B1 by walking the AST of every module under src/anydepth.

Three rules, all over *every* import statement (module level and inside functions alike):

* layering: a module imports only the layers ``ALLOWED`` lists for its own layer;
* no import loops: the graph "module -> module it imports" has no cycle (a function-level import that closes a
  loop is still a loop: it only moves the failure from import time to call time);
* nothing below the package root imports the root (``anydepth/__init__.py`` re-exports the public API and imports
  the packages, so importing it from inside closes a loop); the CLI, the application layer, may use the public API.

Each rule has a self-test on a throw-away package written under ``tmp_path``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "anydepth"

# layer of a module, by its first component below ``anydepth``
BASE = {"registry", "types", "config", "ops", "atomic", "version", "extras", "hub", "shard"}
MIDDLE = {"models", "data", "losses"}
ALLOWED: dict[str, set[str]] = {
    # base modules: standard library / third-party only, plus other base modules (config may use OmegaConf)
    **{b: set(BASE) for b in BASE},
    # models, data, losses: base only (and themselves)
    **{m: BASE | {m} for m in MIDDLE},
    "eval": BASE | {"data", "eval"},
    # upper layers: anything but cli
    **{
        u: BASE | MIDDLE | {"eval", "engine", "inference", "export", "bench", "serve", "demo", u}
        for u in ("engine", "inference", "export", "bench", "serve", "demo")
    },
}


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "anydepth":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, src: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (src / rel).is_dir() or (src / rel).with_suffix(".py").is_file()


def _imports(path: Path, src: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``, at any depth (functions, ``if TYPE_CHECKING`` ...).

    ``from pkg import name`` yields ``pkg.name`` when ``name`` is a submodule of ``pkg`` and ``pkg`` otherwise
    (``name`` then comes from ``pkg/__init__.py``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path, src)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            own = name.split(".")[0] == src.name
            subs = [f"{name}.{a.name}" for a in node.names]
            out += sorted({(node.lineno, s if own and _is_module(s, src) else name) for s in subs})
    return out


def _files(src: Path) -> Iterator[tuple[Path, str]]:
    files = sorted(src.rglob("*.py"))
    assert files, f"no source files found under {src}"
    for f in files:
        yield f, _module_name(f, src)


def layering_violations(src: Path = SRC) -> list[str]:
    """Imports that cross the layers of ``ALLOWED`` (plus any import of ``anydepth.cli`` outside the CLI)."""
    violations = []
    for f, mod in _files(src):
        layer = _component(mod)
        if layer in (None, "__init__", "cli"):
            continue  # the package root re-exports the API; the CLI may import anything
        allowed = ALLOWED.get(layer)
        if allowed is None:
            violations.append(f"{mod}: top-level module {layer!r} has no layer in tests/test_layering.py")
            continue
        for lineno, name in _imports(f, src):
            target = _component(name)
            if target is None or target == "__init__":
                continue
            if target == "cli":
                violations.append(f"{f.relative_to(src.parent)}:{lineno}: nothing may import anydepth.cli")
            elif target not in allowed:
                violations.append(
                    f"{f.relative_to(src.parent)}:{lineno}: {layer} may not import anydepth.{target}"
                )
    return list(dict.fromkeys(violations))  # one line importing several names is reported once


def root_imports(src: Path = SRC) -> list[str]:
    """Imports of the package root (``import anydepth``, ``from anydepth import x``) below the root, CLI excepted."""
    out = []
    for f, mod in _files(src):
        if _component(mod) in ("__init__", "cli"):
            continue
        for lineno, name in _imports(f, src):
            if name == src.name:
                out.append(f"{f.relative_to(src.parent)}:{lineno}: imports the package root {src.name}")
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (any depth; a parent package is not implied)."""
    graph: dict[str, set[str]] = {}
    for f, mod in _files(src):
        targets = graph.setdefault(mod, set())
        for _, name in _imports(f, src):
            if name.split(".")[0] == src.name and name != mod and _is_module(name, src):
                targets.add(name)
    return graph


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """Strongly connected components of ``import_graph`` with more than one module (Tarjan), sorted."""
    graph = import_graph(src)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_layering() -> None:
    violations = layering_violations()
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_no_import_loops() -> None:
    cycles = import_cycles()
    assert not cycles, "import loops:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_package_root_import() -> None:
    found = root_imports()
    assert not found, "imports of the package root from inside the package:\n" + "\n".join(found)


def _probe_package(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "anydepth"
    for rel, text in {"__init__.py": "", "models/__init__.py": "", "eval/__init__.py": "", **files}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text, encoding="utf-8")
    return src


def test_layering_detects_violation(tmp_path: Path) -> None:
    # the checker itself must catch a forbidden import, also inside a function
    src = _probe_package(
        tmp_path,
        {"models/probe.py": "def f():\n    from anydepth.eval import metrics\n", "eval/metrics.py": ""},
    )
    violations = layering_violations(src)
    assert len(violations) == 1 and "models/probe.py:2: models may not import anydepth.eval" in violations[0]


def test_import_loop_detected_through_function_level_imports(tmp_path: Path) -> None:
    src = _probe_package(
        tmp_path,
        {
            "models/a.py": "from anydepth.models.b import g\n\ndef f():\n    return g()\n",
            "models/b.py": "def g():\n    from anydepth.models import a\n    return a\n",
            "models/c.py": "from anydepth.models import a\n",  # imports into the loop, is not part of it
        },
    )
    assert import_cycles(src) == [["anydepth.models.a", "anydepth.models.b"]]
    (src / "models" / "b.py").write_text("def g():\n    return 1\n", encoding="utf-8")
    assert import_cycles(src) == []


def test_package_root_import_detected(tmp_path: Path) -> None:
    src = _probe_package(
        tmp_path,
        {
            "models/probe.py": "def version():\n    from anydepth import __version__\n    return __version__\n",
            "cli/__init__.py": "import anydepth\n",  # the CLI may use the public API
        },
    )
    assert root_imports(src) == ["anydepth/models/probe.py:2: imports the package root anydepth"]
