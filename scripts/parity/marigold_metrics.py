#!/usr/bin/env python
"""Parity check of anydepth's evaluation (alignment + clipping + metrics, and the NYUv2/KITTI readers, crops and
masks) against Marigold's own evaluation code, run from a separately fetched copy of prs-eth/Marigold.

Nothing of Marigold is copied into anydepth or installed: this script loads Marigold's modules by file path at
run time (``src/util/alignment.py``, ``src/util/metric.py``, ``src/dataset/{base_depth,nyu,kitti}_dataset.py``) and
executes the alignment/clipping block of ``script/depth/eval.py`` (the lines between ``# Align with GT using least
square`` and ``# Evaluate (using CUDA if available)``), extracted from that file's source, in a namespace holding
the inputs. Optional: the same for EnVision-Research/Lotus (``evaluation/util/*.py``, ``evaluation/evaluation.py``).

Usage::

    python scripts/parity/marigold_metrics.py /path/to/Marigold [--lotus /path/to/Lotus] [--json out.json]

A repository path may be a normal checkout or a bare git directory (files are then read with ``git show HEAD:``).
Marigold's ``metric.py`` imports pandas for a tracker class this script does not use, and its dataset module
imports torchvision names used only for training; when those packages are missing, inert stand-ins are put in
``sys.modules`` for the duration of the import.

Cases:
    * random: float32 ground truth, masks and predictions (depth-space and disparity-space) on several sizes,
      with each benchmark's clip range, including an ETH3D-like ``alignment_max_res`` case;
    * fixtures: the real NYUv2 and KITTI frames of the shared fixtures (``--fixtures``, default ``../shared/fixtures/rgbd`` next
      to the repository) laid out in Marigold's layout;
      Marigold's dataset classes produce GT and masks (KB crop, Eigen masks) and anydepth's ``evaluate`` reads the
      same layout and the same prediction files.

For every case and metric the relative difference ``|ours - theirs| / |theirs|`` is reported (absolute difference
when ``|theirs| < 1e-12``); the script exits with status 1 if any exceeds ``--tol`` (default 1e-6).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "src"))  # run from a source checkout without installing

from anydepth.eval.benchmarks import get_benchmark  # noqa: E402
from anydepth.eval.evaluate import PrecomputedPredictions, evaluate, score_prediction  # noqa: E402
from anydepth.eval.metrics import DEFAULT_METRICS, MARIGOLD_NAMES  # noqa: E402
from anydepth.types import DepthSpace  # noqa: E402

MARIGOLD_FILES = [
    "src/util/alignment.py",
    "src/util/metric.py",
    "src/util/depth_transform.py",
    "src/dataset/base_depth_dataset.py",
    "src/dataset/base_normals_dataset.py",
    "src/dataset/nyu_dataset.py",
    "src/dataset/kitti_dataset.py",
    "script/depth/eval.py",
]
LOTUS_FILES = ["evaluation/util/alignment.py", "evaluation/util/metric.py", "evaluation/evaluation.py"]
BEGIN_MARK = "# Align with GT using least square"
END_MARK = "# Evaluate (using CUDA if available)"


# ----------------------------------------------------------------------------------------------------------------
# loading the reference code
# ----------------------------------------------------------------------------------------------------------------
def materialize(repo: Path, files: list[str], dest: Path) -> tuple[Path, str]:
    """Make ``files`` of ``repo`` available as real files; returns (root, revision description)."""
    if all((repo / f).is_file() for f in files):
        rev = _git(["-C", str(repo), "rev-parse", "HEAD"]) or "working tree"
        return repo, rev
    gitdir = repo / ".git" if (repo / ".git").exists() else repo
    for f in files:
        out = dest / f
        out.parent.mkdir(parents=True, exist_ok=True)
        data = subprocess.run(
            ["git", "--git-dir", str(gitdir), "show", f"HEAD:{f}"], check=True, capture_output=True
        ).stdout
        out.write_bytes(data)
    rev = _git(["--git-dir", str(gitdir), "rev-parse", "HEAD"]) or "unknown"
    return dest, rev


def _git(args: list[str]) -> str | None:
    try:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def stub_missing(names: dict[str, dict[str, Any]]) -> list[str]:
    """Insert inert modules for packages that are not installed; returns the names stubbed."""
    stubbed = []
    for name, attrs in names.items():
        try:
            importlib.import_module(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__dict__.update(attrs)
            mod.__path__ = []  # type: ignore[attr-defined]
            sys.modules[name] = mod
            stubbed.append(name)
    return stubbed


class _Inert:
    def __init__(self, *a: Any, **k: Any) -> None:
        raise RuntimeError("stand-in for a package that is not installed")


def extract_eval_block(path: Path) -> types.CodeType:
    """Compile the alignment + clipping block of an evaluation script, taken verbatim from its source."""
    src = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(src) if BEGIN_MARK in line)
    end = next(i for i, line in enumerate(src) if END_MARK in line and i > start)
    block = textwrap.dedent("\n".join(src[start:end]))
    return compile(block, f"{path}:{start + 1}-{end}", "exec")


def eval_metric_names(path: Path) -> list[str]:
    """The ``eval_metrics`` list literal of an evaluation script."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "eval_metrics" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"no eval_metrics list in {path}")


class Reference:
    """One reference implementation (Marigold or Lotus): alignment block + metric functions."""

    def __init__(
        self, name: str, align_mod: types.ModuleType, metric_mod: types.ModuleType, script: Path
    ) -> None:
        self.name = name
        self.align = align_mod
        self.metric = metric_mod
        self.block = extract_eval_block(script)
        self.metric_names = eval_metric_names(script)

    def run(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        mask: np.ndarray,
        alignment: str,
        min_depth: float,
        max_depth: float,
        max_res: int | None,
    ) -> dict[str, float]:
        ns: dict[str, Any] = {
            "np": np,
            "args": types.SimpleNamespace(alignment=alignment, alignment_max_res=max_res),
            "alignment": alignment,
            "alignment_max_res": max_res,
            "dataset": types.SimpleNamespace(min_depth=min_depth, max_depth=max_depth),
            "depth_raw": gt,
            "depth_pred": pred,
            "valid_mask": mask,
            "align_depth_least_square": self.align.align_depth_least_square,
            "depth2disparity": self.align.depth2disparity,
            "disparity2depth": self.align.disparity2depth,
        }
        exec(self.block, ns)
        depth_pred_ts = torch.from_numpy(ns["depth_pred"])
        gt_ts, mask_ts = torch.from_numpy(gt), torch.from_numpy(mask)
        out = {}
        for m in self.metric_names:
            out[m] = getattr(self.metric, m)(depth_pred_ts, gt_ts, mask_ts).item()
        return out


# ----------------------------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------------------------
def rel_diff(ours: float, theirs: float) -> float:
    if abs(theirs) < 1e-12:
        return abs(ours - theirs)
    return abs(ours - theirs) / abs(theirs)


def compare(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    inv = {v: k for k, v in MARIGOLD_NAMES.items()}
    return {inv[k]: rel_diff(ours[inv[k]], v) for k, v in theirs.items() if k in inv}


def ours_run(
    gt: np.ndarray,
    pred: np.ndarray,
    mask: np.ndarray,
    alignment: str,
    space: DepthSpace,
    min_depth: float,
    max_depth: float,
    max_res: int | None,
) -> dict[str, float]:
    return score_prediction(
        torch.from_numpy(pred),
        space,
        torch.from_numpy(gt),
        torch.from_numpy(mask),
        alignment=alignment,
        min_depth=min_depth,
        max_depth=max_depth,
        alignment_max_res=max_res,
    )


def random_cases(seeds: int) -> list[dict[str, Any]]:
    """Synthetic float32 inputs: (name, gt, pred, mask, alignment, space, range, max_res)."""
    cases = []
    ranges = {
        "nyuv2": (1e-3, 10.0),
        "kitti": (1e-5, 80.0),
        "eth3d": (1e-5, float("inf")),
        "diode": (0.6, 350.0),
    }
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for bench, (lo, hi) in ranges.items():
            big = bench == "eth3d"
            h, w = (806, 1209) if big else (int(rng.integers(40, 160)), int(rng.integers(40, 220)))
            top = hi if np.isfinite(hi) else 120.0
            gt = np.exp(rng.uniform(np.log(max(lo, 0.05)), np.log(top), size=(h, w))).astype(np.float32)
            gt[rng.random((h, w)) < 0.2] = 0.0  # holes
            mask = (gt > lo) & (gt < hi) & (rng.random((h, w)) < 0.9)
            noise = rng.normal(0, 0.1, size=(h, w))
            s, t = rng.uniform(0.2, 3.0), rng.uniform(-0.5, 0.5)
            depth_pred = (s * gt * np.exp(noise) + t).astype(np.float32)
            disp = np.where(gt > 0, 1.0 / np.maximum(gt, 1e-6), 0.0)
            disp_pred = (s * disp * np.exp(noise) + t * 0.01).astype(np.float32)
            disp_pred[rng.random((h, w)) < 0.01] = -0.1  # a few non-positive outputs
            max_res = 256 if big else None
            cases.append(
                dict(
                    name=f"random/{bench}/seed{seed}/depth",
                    gt=gt,
                    pred=depth_pred,
                    mask=mask,
                    alignment="least_square",
                    space=DepthSpace.DEPTH_AFFINE_INVARIANT,
                    lo=lo,
                    hi=hi,
                    max_res=max_res,
                )
            )
            cases.append(
                dict(
                    name=f"random/{bench}/seed{seed}/disparity",
                    gt=gt,
                    pred=disp_pred,
                    mask=mask,
                    alignment="least_square_disparity",
                    space=DepthSpace.DISPARITY_AFFINE_INVARIANT,
                    lo=lo,
                    hi=hi,
                    max_res=max_res,
                )
            )
    return cases


# ----------------------------------------------------------------------------------------------------------------
# fixtures: Marigold's dataset classes vs anydepth's readers on the same files
# ----------------------------------------------------------------------------------------------------------------
def layout_fixtures(fixtures: Path, root: Path) -> dict[str, Path]:
    """Write the NYU and KITTI fixture frames in Marigold's evaluation layouts; returns list files."""
    from PIL import Image

    manifest = json.loads((fixtures / "manifest.json").read_text())
    lists: dict[str, list[str]] = {"nyuv2": [], "kitti": []}
    for i, s in enumerate(x for x in manifest["samples"] if x["dataset"] == "nyu"):
        d = root / "nyuv2" / "test" / "fixture_scene"
        d.mkdir(parents=True, exist_ok=True)
        Image.open(fixtures / s["rgb"]).convert("RGB").save(d / f"rgb_{i:04d}.png")
        shutil.copy(fixtures / s["depth"], d / f"depth_{i:04d}.png")
        shutil.copy(fixtures / s["depth"], d / f"filled_{i:04d}.png")
        r = f"test/fixture_scene/rgb_{i:04d}.png"
        lists["nyuv2"].append(f"{r} {r.replace('rgb_', 'depth_')} {r.replace('rgb_', 'filled_')}")
    for s in (x for x in manifest["samples"] if x["dataset"] == "kitti"):
        fid = Path(s["rgb"]).stem
        rgb = f"2011_09_26/2011_09_26_drive_0001_sync/image_02/data/{fid}.png"
        gt = f"2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/{fid}.png"
        for rel, src in ((rgb, s["rgb"]), (gt, s["depth"])):
            (root / "kitti" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(fixtures / src, root / "kitti" / rel)
        lists["kitti"].append(f"{rgb} {gt} 721.5377")
    lists["kitti"].append("2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000009999.png None 721.5377")
    out = {}
    for k, rows in lists.items():
        out[k] = root / f"{k}_list.txt"
        out[k].write_text("\n".join(rows) + "\n")
    return out


def fixture_predictions(gt: np.ndarray, space: str, seed: int) -> np.ndarray:
    """A plausible, imperfect prediction derived from GT (filled, smoothed, perturbed)."""
    rng = np.random.default_rng(seed)
    g = gt.astype(np.float64).copy()
    fill = np.median(g[g > 0]) if (g > 0).any() else 1.0
    g[g <= 0] = fill
    k = 9
    pad = np.pad(g, k // 2, mode="edge")
    sm = np.mean([pad[i : i + g.shape[0], j : j + g.shape[1]] for i in range(k) for j in range(k)], axis=0)
    noise = np.exp(rng.normal(0, 0.05, size=g.shape))
    if space == "disparity":
        return (0.37 / sm * noise + 0.02).astype(np.float32)
    return (2.1 * sm * noise - 0.3).astype(np.float32)


def run_fixture_parity(
    marigold_root: Path, ref: Reference, fixtures: Path, work: Path
) -> list[dict[str, Any]]:
    stub_missing(
        {
            "torchvision": {},
            "torchvision.transforms": {
                "InterpolationMode": types.SimpleNamespace(NEAREST_EXACT=0, BILINEAR=2),
                "Resize": _Inert,
                "ColorJitter": _Inert,
            },
            "torchvision.transforms.functional": {},
        }
    )
    for pkg in ("src", "src.dataset", "src.util"):
        if pkg not in sys.modules:
            m = types.ModuleType(pkg)
            m.__path__ = [str(marigold_root / pkg.replace(".", "/"))]  # type: ignore[attr-defined]
            sys.modules[pkg] = m
    load_module("src.util.depth_transform", marigold_root / "src/util/depth_transform.py")
    base = load_module("src.dataset.base_depth_dataset", marigold_root / "src/dataset/base_depth_dataset.py")
    load_module("src.dataset.base_normals_dataset", marigold_root / "src/dataset/base_normals_dataset.py")
    nyu = load_module("src.dataset.nyu_dataset", marigold_root / "src/dataset/nyu_dataset.py")
    kitti = load_module("src.dataset.kitti_dataset", marigold_root / "src/dataset/kitti_dataset.py")

    lists = layout_fixtures(fixtures, work / "data")
    rows = []
    for bench, cls, kwargs in (
        ("nyuv2", nyu.NYUDepthDataset, {"eigen_valid_mask": True}),
        ("kitti", kitti.KITTIDepthDataset, {"kitti_bm_crop": True, "valid_mask_crop": "eigen"}),
    ):
        spec = get_benchmark(bench)
        ds = cls(
            mode=base.DatasetMode.EVAL,
            filename_ls_path=str(lists[bench]),
            dataset_dir=str(work / "data" / bench),
            disp_name=bench,
            **kwargs,
        )
        for space, alignment in (("depth", "least_square"), ("disparity", "least_square_disparity")):
            pred_dir = work / f"pred_{bench}_{space}"
            theirs_per: dict[str, dict[str, float]] = {}
            for i in range(len(ds)):
                item = ds[i]
                gt = item["depth_raw_linear"].squeeze().numpy()
                mask = item["valid_mask_raw"].squeeze().numpy()
                rgb_rel = item["rgb_relative_path"]
                pred = fixture_predictions(gt, space, seed=i)
                pname = base.get_pred_name(Path(rgb_rel).name, ds.name_mode, suffix=".npy")
                (pred_dir / Path(rgb_rel).parent).mkdir(parents=True, exist_ok=True)
                np.save(pred_dir / Path(rgb_rel).parent / pname, pred)
                theirs_per[rgb_rel] = ref.run(
                    gt,
                    np.load(pred_dir / Path(rgb_rel).parent / pname).astype(np.float32),
                    mask,
                    alignment,
                    ds.min_depth,
                    ds.max_depth,
                    None,
                )
            predictor = PrecomputedPredictions(pred_dir, space, naming="marigold", benchmark=bench)
            res = evaluate(
                predictor, spec, work / "data" / bench, split_file=lists[bench], alignment=alignment
            )
            ours_per = {r["name"]: r for r in res.per_sample}
            if set(ours_per) != set(theirs_per):
                raise AssertionError(
                    f"{bench}: sample sets differ: {sorted(ours_per)} vs {sorted(theirs_per)}"
                )
            for name, theirs in theirs_per.items():
                rows.append(
                    dict(
                        case=f"fixture/{bench}/{space}/{Path(name).name}",
                        diffs=compare(ours_per[name], theirs),
                        theirs=theirs,
                        ours={k: ours_per[name][k] for k in DEFAULT_METRICS},
                    )
                )
            # the benchmark means (average over images) as Marigold's MetricTracker computes them
            means_theirs = {m: float(np.mean([t[m] for t in theirs_per.values()])) for m in ref.metric_names}
            rows.append(
                dict(
                    case=f"fixture/{bench}/{space}/MEAN",
                    diffs=compare(res.metrics, means_theirs),
                    theirs=means_theirs,
                    ours=dict(res.metrics),
                )
            )
    return rows


# ----------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("marigold", type=Path, help="path of a prs-eth/Marigold checkout or bare git directory")
    ap.add_argument(
        "--lotus", type=Path, default=None, help="path of an EnVision-Research/Lotus checkout/git dir"
    )
    ap.add_argument("--fixtures", type=Path, default=REPO_ROOT.parent / "shared" / "fixtures" / "rgbd")
    ap.add_argument("--seeds", type=int, default=3, help="random seeds per benchmark range")
    ap.add_argument("--tol", type=float, default=1e-6, help="maximum allowed relative difference")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers to this JSON file")
    args = ap.parse_args(argv)

    stubbed = stub_missing({"pandas": {"DataFrame": _Inert}})
    tmp = Path(tempfile.mkdtemp(prefix="anydepth_parity_"))
    try:
        mroot, mrev = materialize(args.marigold, MARIGOLD_FILES, tmp / "marigold")
        refs = [
            Reference(
                "marigold",
                load_module("marigold_alignment", mroot / "src/util/alignment.py"),
                load_module("marigold_metric", mroot / "src/util/metric.py"),
                mroot / "script/depth/eval.py",
            )
        ]
        revs = {"marigold": mrev}
        if args.lotus is not None:
            lroot, lrev = materialize(args.lotus, LOTUS_FILES, tmp / "lotus")
            refs.append(
                Reference(
                    "lotus",
                    load_module("lotus_alignment", lroot / "evaluation/util/alignment.py"),
                    load_module("lotus_metric", lroot / "evaluation/util/metric.py"),
                    lroot / "evaluation/evaluation.py",
                )
            )
            revs["lotus"] = lrev

        results: list[dict[str, Any]] = []
        for c in random_cases(args.seeds):
            ours = ours_run(
                c["gt"], c["pred"], c["mask"], c["alignment"], c["space"], c["lo"], c["hi"], c["max_res"]
            )
            for ref in refs:
                theirs = ref.run(
                    c["gt"], c["pred"].copy(), c["mask"], c["alignment"], c["lo"], c["hi"], c["max_res"]
                )
                results.append(
                    dict(
                        case=f"{ref.name}:{c['name']}",
                        diffs=compare(ours, theirs),
                        theirs=theirs,
                        ours={k: ours[k] for k in DEFAULT_METRICS},
                    )
                )
        if args.fixtures.is_dir():
            for r in run_fixture_parity(mroot, refs[0], args.fixtures, tmp / "fixtures"):
                r["case"] = "marigold:" + r["case"]
                results.append(r)
        else:
            print(f"fixtures not found at {args.fixtures}; fixture cases skipped")

        worst = {m: max(r["diffs"].get(m, 0.0) for r in results) for m in DEFAULT_METRICS}
        groups: dict[str, dict[str, float]] = {}
        for r in results:
            key = r["case"].split("/")[0] + "/" + r["case"].split("/")[1]
            g = groups.setdefault(key, {m: 0.0 for m in DEFAULT_METRICS})
            for m, v in r["diffs"].items():
                g[m] = max(g[m], v)
        print(f"reference revisions: {revs}; stand-ins used for: {stubbed or 'none'}")
        print(f"{len(results)} comparisons; max relative difference per metric and case group:")
        print("| group | n | " + " | ".join(DEFAULT_METRICS) + " |")
        print("|---|---|" + "---|" * len(DEFAULT_METRICS))
        for key, g in groups.items():
            n = sum(1 for r in results if r["case"].startswith(key + "/"))
            print(f"| {key} | {n} | " + " | ".join(f"{g[m]:.1e}" for m in DEFAULT_METRICS) + " |")
        print(
            "| **all** | "
            + str(len(results))
            + " | "
            + " | ".join(f"{worst[m]:.1e}" for m in DEFAULT_METRICS)
            + " |"
        )
        if args.json:
            args.json.write_text(
                json.dumps({"revisions": revs, "worst": worst, "results": results}, indent=1)
            )
        bad = {m: v for m, v in worst.items() if v > args.tol}
        if bad:
            print(f"FAIL: relative differences above {args.tol}: {bad}")
            return 1
        print(f"OK: every metric within {args.tol} relative difference")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
