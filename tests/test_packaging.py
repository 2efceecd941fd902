"""The built package works outside the checkout: sdist + wheel (``python -m build``), installed into a fresh venv.

No network: the build runs without isolation (the running environment's setuptools), the wheel is installed with
``--no-deps --no-index``, and the fresh venv sees the running environment's third-party packages (torch, numpy,
FastAPI, ...) through a ``.pth`` file, so its ``anydepth`` comes from the wheel and nothing else is downloaded.
Marked slow (about 30-60 s); CI runs it with ``make test-packaging``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_torch_is_a_range_and_extras_declare_every_optional_import() -> None:
    deps = PYPROJECT["project"]["dependencies"]
    torch_req = next(d for d in deps if _requirement_name(d) == "torch")
    assert "==" not in torch_req and ">=" in torch_req, torch_req  # a range: never replaces the user's torch
    import torch

    lower = re.search(r">=\s*([\d.]+)", torch_req)
    assert lower is not None
    have = tuple(int(x) for x in re.findall(r"\d+", torch.__version__.split("+")[0])[:2])
    assert have >= tuple(int(x) for x in lower.group(1).split(".")[:2])
    # the Makefile pins the tested CPU wheel
    assert re.search(r"^TORCH_PIN \?= torch==\d+\.\d+\.\d+$", (ROOT / "Makefile").read_text(), re.M)
    extras = PYPROJECT["project"]["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        names = {_requirement_name(r) for r in extras[extra]}
        assert dist.lower().replace("_", "-") in names, f"{module}: {dist} is not declared in extra {extra!r}"
        all_extras = extras["all"][0]
        assert extra in all_extras, f"extra {extra!r} is missing from 'all'"


def _fresh_venv(path: Path) -> Path:
    """A venv without pip whose path ends with the running environment's site-packages (through a .pth file)."""
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(path)
    py = path / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(parent)))
    return py


@pytest.mark.slow
def test_wheel_and_sdist_install_and_run(tmp_path: Path) -> None:
    pytest.importorskip("build")
    # build from a copy of the sources so the checkout gets no build/ or egg-info
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    )
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_NO_INDEX"] = "1"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1

    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta).decode()
        entry = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    for needed in (
        "anydepth/py.typed",
        "anydepth/serve/static/index.html",
        "anydepth/serve/static/app.js",
        "anydepth/serve/examples/synthetic_room.jpg",
        "anydepth/hub.py",
        "anydepth/shard.py",
    ):
        assert needed in names, f"{needed} missing from the wheel"
    assert any(n.startswith("anydepth/serve/static/vendor/") for n in names)
    assert "anydepth = anydepth.cli.main:main" in entry
    assert re.search(r"^Requires-Dist: torch<3,>=2\.5$|^Requires-Dist: torch>=2\.5,<3$", metadata, re.M), (
        metadata
    )
    assert "Provides-Extra: hub" in metadata and "Provides-Extra: parquet" in metadata
    with tarfile.open(sdists[0]) as tf:
        snames = tf.getnames()
    assert any(n.endswith("src/anydepth/serve/static/index.html") for n in snames)
    assert any(n.endswith("src/anydepth/py.typed") for n in snames)

    py = _fresh_venv(tmp_path / "venv")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheels[0]),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    bindir = py.parent
    run_env = {**env, "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}

    def run(*cmd: str | Path) -> str:
        r = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=300
        )
        assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
        return r.stdout

    where = run(py, "-c", "import anydepth; print(anydepth.__file__)").strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel, not the checkout
    assert "infer" in run(bindir / "anydepth", "--help")
    assert "download" in run(bindir / "anydepth", "--help")

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(img)
    run(
        bindir / "anydepth",
        "infer",
        img,
        "-o",
        tmp_path / "out",
        "--model",
        "sdt_test",
        "--save",
        "png16,npy",
    )
    depth = np.load(tmp_path / "out" / "in_pred.npy")
    assert (tmp_path / "out" / "in_pred16.png").is_file() and (tmp_path / "out" / "summary.json").is_file()
    assert depth.shape == (40, 56) and np.isfinite(depth).all()

    page = run(
        py,
        "-c",
        "import anydepth\n"
        "from fastapi.testclient import TestClient\n"
        "from anydepth.serve.app import create_app\n"
        "c = TestClient(create_app(anydepth.create_model('sdt_test')), base_url='http://127.0.0.1')\n"
        "for url in ('/', '/static/app.js', '/static/style.css', '/v1/examples'):\n"
        "    r = c.get(url); assert r.status_code == 200, (url, r.status_code); print(url, len(r.content))\n"
        "ex = c.get('/v1/examples').json()['examples']; assert ex\n"
        "r = c.get(ex[0]['url']); assert r.status_code == 200 and r.content[:2] == b'\\xff\\xd8'\n",
    )
    assert "/static/app.js" in page


def test_every_require_call_names_a_declared_optional_dependency() -> None:
    import ast

    calls = []
    for f in sorted((ROOT / "src" / "anydepth").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args:
                arg = node.args[0]
                assert isinstance(arg, ast.Constant), (
                    f"{f}:{node.lineno}: require() needs a literal module name"
                )
                calls.append((f, str(arg.value).split(".")[0]))
    assert len(calls) >= 10
    for f, top in calls:
        assert top in EXTRAS, f"{f}: require({top!r}) is not in anydepth.extras.EXTRAS"
