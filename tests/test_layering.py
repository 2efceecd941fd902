"""Enforce the import layering of design.md B1 by walking the AST of every module under src/anydepth."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "anydepth"

# layer of a module, by its first component below ``anydepth``
BASE = {"registry", "types", "config", "ops", "atomic", "extras", "hub", "shard"}
MIDDLE = {"models", "data", "losses"}
ALLOWED: dict[str, set[str]] = {
    # base modules: standard library / third-party only, plus other base modules (config may use OmegaConf)
    **{b: set(BASE) for b in BASE},
    # models, data, losses: base only (and themselves)
    **{m: BASE | {m} for m in MIDDLE},
    "eval": BASE | {"data", "eval"},
    # upper layers: anything but cli
    **{
        u: BASE | MIDDLE | {"eval", "engine", "inference", "export", "bench", "serve", "demo", u, "__init__"}
        for u in ("engine", "inference", "export", "bench", "serve", "demo")
    },
}


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "anydepth":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
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
            out.append((node.lineno, name))
            # ``from anydepth import data`` imports the subpackage ``anydepth.data``
            if name == "anydepth":
                out += [
                    (node.lineno, f"anydepth.{a.name}")
                    for a in node.names
                    if (SRC / a.name).is_dir() or (SRC / f"{a.name}.py").is_file()
                ]
    return out


def test_layering() -> None:
    violations = []
    files = sorted(SRC.rglob("*.py"))
    assert files, "no source files found"
    for f in files:
        mod = _module_name(f)
        layer = _component(mod)
        if layer in (None, "__init__", "cli"):
            continue  # the package root re-exports the API; the CLI may import anything
        allowed = ALLOWED.get(layer)
        assert allowed is not None, (
            f"{mod}: top-level module {layer!r} has no layer in tests/test_layering.py"
        )
        for lineno, name in _imports(f):
            target = _component(name)
            if target is None or target == "__init__":
                continue
            if target == "cli":
                violations.append(f"{f.relative_to(SRC.parent)}:{lineno}: nothing may import anydepth.cli")
            elif target not in allowed:
                violations.append(
                    f"{f.relative_to(SRC.parent)}:{lineno}: {layer} may not import anydepth.{target}"
                )
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_layering_detects_violation(tmp_path: Path) -> None:
    # the checker itself must catch a forbidden import (guards against a test that cannot fail)
    bad = SRC / "models" / "_layering_probe.py"
    try:
        bad.write_text("from anydepth.eval import metrics\n", encoding="utf-8")
        try:
            test_layering()
        except AssertionError as e:
            assert "models may not import anydepth.eval" in str(e)
        else:  # pragma: no cover
            raise AssertionError("layering checker missed a violation")
    finally:
        bad.unlink()
