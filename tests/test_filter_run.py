"""End-to-end tests of the data filter: CLI on real frames and procedural data, resume, corrupt input, safety."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from anydepth.cli.filter import parse_dataset_spec
from anydepth.cli.main import main
from anydepth.data import io
from anydepth.data.datasets.folder import FolderDataset
from anydepth.data.datasets.synthetic import write_synthetic_dataset
from anydepth.data.filtering import ScoreParams, SelectionConfig, Source, filter_index, quality_scores
from anydepth.data.filtering.report import read_scores

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "rgbd"
FINAL_FILES = ("scores.csv", "summary.json", "summary.md")


def _fixture_lists(tmp: Path) -> dict[str, Path]:
    """Lists of ``rgb depth depth_scale`` lines relative to the fixtures root: KITTI, and the indoor frames."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    by: dict[str, list[str]] = {}
    for s in manifest["samples"]:
        group = "kitti" if s["dataset"] == "kitti" else "indoor"
        by.setdefault(group, []).append(f"{s['rgb']} {s['depth']} {s['depth_scale']}\n")
    out = {}
    for name, lines in by.items():
        p = tmp / f"{name}.txt"
        p.write_text("".join(lines))
        out[name] = p
    return out


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, 10, (40, 48), seed=1)
    return root


def test_end_to_end_cli_real_frames_and_synthetic(
    tmp_path: Path, synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (FIXTURES / "manifest.json").is_file():
        pytest.skip("shared RGB-D fixtures not available")
    lists = _fixture_lists(tmp_path)
    before = _tree_digest(synth)
    out = tmp_path / "out"
    argv = ["filter", "--dataset", f"folder@syn={synth}", "--output", str(out), "--workers", "2", "-q"]
    for name, lf in lists.items():
        argv += ["--dataset", f"folder@{name}={FIXTURES}:{lf}"]
    argv += ["--gallery", "1"]
    assert main(argv) == 0
    assert _tree_digest(synth) == before  # data are only read

    table = read_scores(out / "scores.csv")
    labels = ["syn", *lists]
    assert [r["dataset"] for r in table] == [
        lab for lab in labels for _ in range(sum(r["dataset"] == lab for r in table))
    ]
    assert len(table) == 10 + 10  # 10 synthetic + 10 fixture frames
    assert all(r["status"] == "ok" for r in table)
    summary = json.loads((out / "summary.json").read_text())
    per = summary["datasets"]
    # KITTI's sparse LiDAR frames have 18-21% valid pixels: two are below the 20% rule
    assert per["kitti"]["removed_by"]["low_valid"] == 2 and per["kitti"]["kept"] == 1
    # synthetic: 10 eligible -> floor(0.2 * 10) = 2 lowest per metric, union removed (2 to 4 samples)
    syn = per["syn"]
    assert syn["cutoff"]["n_drop_s_dist"] == 2 and syn["cutoff"]["n_drop_s_grad"] == 2
    assert 6 <= syn["kept"] <= 8 and syn["kept"] + syn["removed"] == 10
    assert summary["all"]["total"] == 20
    assert summary["all"]["kept"] == sum(c["kept"] for c in per.values())
    # kept lists repeat the input lines verbatim (the depth-scale column included); removed lists give reasons
    for name, lf in lists.items():
        kept = (out / "lists" / f"{name}.kept.txt").read_text().splitlines()
        assert set(kept) <= set(lf.read_text().splitlines()) and len(kept) == per[name]["kept"]
    removed = (out / "lists" / "kitti.removed.txt").read_text().splitlines()
    assert removed[0].startswith("#") and all(ln.split()[2] == "low_valid" for ln in removed[1:])
    syn_kept = (out / "lists" / "syn.kept.txt").read_text().splitlines()
    assert len(syn_kept) == syn["kept"] and all(len(ln.split()) == 2 for ln in syn_kept)
    # the pipeline's numbers equal the pure score function on the decoded depth
    nyu = next(r for r in table if r["depth_path"] == "nyu/depth/sync_depth_00000.png")
    raw = io.read_png16(FIXTURES / nyu["depth_path"]).astype(np.float32) / np.float32(1000.0)
    q = quality_scores(raw, raw > 0)
    assert (nyu["s_dist"], nyu["s_grad"], nyu["valid_fraction"]) == (q.s_dist, q.s_grad, q.valid_fraction)
    # parallel scoring gives exactly the in-process result
    out1 = tmp_path / "out1"
    argv1 = list(argv)
    argv1[argv1.index(str(out))] = str(out1)
    argv1[argv1.index("--workers") + 1] = "1"
    assert main([*argv1, "--no-plots"]) == 0
    assert _final_bytes(out1) == _final_bytes(out)
    md = (out / "summary.md").read_text()
    assert "| kitti | 3 | 1 | 2 | 33.3 |" in md
    for f in (
        "hist_syn.png",
        "hist_kitti.png",
        "gallery_syn_low.png",
        "gallery_indoor_high.png",
        "mean_scores.png",
    ):
        assert (out / "plots" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _synth_source(root: Path, label: str = "syn") -> Source:
    return Source(label, FolderDataset(root), kind="folder", root=str(root))


def _final_bytes(out: Path) -> dict[str, bytes]:
    files = {f: (out / f).read_bytes() for f in FINAL_FILES}
    for p in sorted((out / "lists").iterdir()):
        files[f"lists/{p.name}"] = p.read_bytes()
    return files


def test_resume_after_interruption_gives_identical_outputs(tmp_path: Path, synth: Path) -> None:
    full = filter_index([_synth_source(synth)], tmp_path / "full", plots=False)
    assert full.complete and full.n_scored == 10 and full.n_resumed == 0

    out = tmp_path / "resumed"
    part = filter_index([_synth_source(synth)], out, plots=False, limit=3)
    assert not part.complete and part.n_scored == 3
    assert not (out / "scores.csv").exists()

    # a kill during scoring: the progress callback raises after two more samples
    calls = []

    def boom(done: int, total: int) -> None:
        calls.append(done)
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        filter_index([_synth_source(synth)], out, plots=False, progress=boom)
    assert calls[0] == 3  # resumed count reported first
    # ...and a torn last line, as if killed mid-write
    with open(out / "scores.progress.csv", "a") as f:
        f.write("syn,7,rgb/000007.png,depth/000007.png,ok,,40,48,19")

    res = filter_index([_synth_source(synth)], out, plots=False)
    assert res.complete and res.n_resumed == 5 and res.n_scored == 5
    assert _final_bytes(out) == _final_bytes(tmp_path / "full")

    # a complete run is reused as is; the selection may change without rescoring
    again = filter_index([_synth_source(synth)], out, plots=False)
    assert again.n_scored == 0 and _final_bytes(out) == _final_bytes(tmp_path / "full")
    loose = filter_index([_synth_source(synth)], out, plots=False, selection=SelectionConfig(drop_dist=0.0))
    assert loose.n_scored == 0 and loose.summary["datasets"]["syn"]["cutoff"]["n_drop_s_dist"] == 0


def test_resume_refuses_other_parameters_or_lists(tmp_path: Path, synth: Path) -> None:
    out = tmp_path / "o"
    filter_index([_synth_source(synth)], out, plots=False, limit=2)
    with pytest.raises(ValueError, match="other score parameters"):
        filter_index([_synth_source(synth)], out, params=ScoreParams(bins=10), plots=False)
    # the same label now points at a list with other files at the same indices
    lst = tmp_path / "other.txt"
    lines = (synth / "train.txt").read_text().splitlines()
    lst.write_text("\n".join(reversed(lines)) + "\n")
    src = Source("syn", FolderDataset(synth, split_file=lst), kind="folder", root=str(synth))
    with pytest.raises(ValueError, match="new --output"):
        filter_index([src], out, plots=False)
    # a non-empty directory that is not a filter run is never written into
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["filter", "--dataset", f"folder={synth}", "-o", str(foreign), "--workers", "1", "-q"]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_corrupt_and_missing_samples_are_excluded(
    tmp_path: Path, synth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    lines = (synth / "train.txt").read_text().splitlines()[:6]
    for ln in lines:
        for rel in ln.split()[:2]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes((synth / rel).read_bytes())
    (root / lines[1].split()[1]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt depth
    (root / lines[2].split()[0]).unlink()  # missing RGB
    lines.append("rgb/missing.png depth/missing.png")  # missing files
    lst = root / "train.txt"
    lst.write_text("\n".join(lines) + "\n")
    before = _tree_digest(root)

    argv = ["filter", "--list", str(lst), "--depth-scale", "1000", "--workers", "1", "--no-plots", "-q"]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "3 unreadable sample(s)" in err
    table = read_scores(tmp_path / "a" / "scores.csv")
    bad = {r["index"]: r for r in table if r["status"] == "error"}
    assert sorted(bad) == [1, 2, 6]
    assert "depth" in bad[1]["error"] and "image not found" in bad[2]["error"]
    assert all(r["reason"] == "unreadable" and r["kept"] == 0 and r["s_dist"] is None for r in bad.values())
    removed = (tmp_path / "a" / "lists" / "train.removed.txt").read_text()
    assert removed.count(" unreadable") == 3
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["datasets"]["train"]["removed_by"]["unreadable"] == 3
    assert summary["datasets"]["train"]["readable"] == 4
    assert _tree_digest(root) == before
    # --strict turns unreadable samples into a failing exit status (outputs are still written)
    assert main([*argv, "-o", str(tmp_path / "b"), "--strict"]) == 1
    assert (tmp_path / "b" / "scores.csv").is_file()
    # a dataset of which nothing can be read (here: PNG depth without a scale) fails loudly
    capsys.readouterr()
    no_scale = [a for a in argv if a not in ("--depth-scale", "1000")]
    assert main([*no_scale, "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "none of its 7 samples could be read" in err and "needs a scale" in err


def test_dataset_spec_parsing_and_bare_form(tmp_path: Path, synth: Path) -> None:
    assert parse_dataset_spec("hypersim=/d/h:/l/h.txt") == ("hypersim", "hypersim", "/d/h", "/l/h.txt")
    assert parse_dataset_spec("folder@nyu=/d") == ("folder", "nyu", "/d", None)
    assert parse_dataset_spec("vkitti2") == ("vkitti2", "vkitti2", None, None)
    with pytest.raises(ValueError):
        parse_dataset_spec("=/d")
    with pytest.raises(ValueError):
        parse_dataset_spec("folder=/d:")
    out = tmp_path / "bare"
    argv = ["filter", "--dataset", "folder", "--root", str(synth), "--list", str(synth / "train.txt")]
    assert main([*argv, "-o", str(out), "--workers", "1", "--no-plots", "-q", "--limit", "4"]) == 0
    assert len(read_scores(out / "scores.progress.csv", columns=_progress_columns())) == 4
    assert main(["filter", "--dataset", "nosuchreader=/x", "-o", str(tmp_path / "u"), "-q"]) == 2
    assert (
        main(["filter", "--dataset", "folder@a=/x", "--dataset", "folder@a=/y", "-o", str(tmp_path / "v")])
        == 2
    )


def _progress_columns() -> tuple[str, ...]:
    from anydepth.data.filtering.report import PROGRESS_COLUMNS

    return PROGRESS_COLUMNS


def test_parquet_table_when_pyarrow_is_installed(tmp_path: Path, synth: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    res = filter_index([_synth_source(synth)], tmp_path / "o", plots=False)
    t = pq.read_table(tmp_path / "o" / "scores.parquet")
    assert t.num_rows == res.n_total and t.column("s_dist").to_pylist() == [
        r["s_dist"] for r in read_scores(tmp_path / "o" / "scores.csv")
    ]


def test_registered_reader_sky_codes_and_options(tmp_path: Path) -> None:
    # a tiny Virtual KITTI 2 tree: depth in centimetres, sky coded 65535 (655.35 m) in the top 8 of 32 rows
    root = tmp_path / "vkitti2"
    lines = []
    for i in range(5):
        base = f"Scene01/clone/frames/{{}}/Camera_0/{{}}_{i:05d}"
        y, x = np.mgrid[0:32, 0:48]
        depth_cm = (300 + 20 * y + 5 * x * (i + 1)).astype(np.uint16)
        depth_cm[:8] = 65535
        io.write_png16(root / (base.format("depth", "depth") + ".png"), depth_cm)
        io.write_image(root / (base.format("rgb", "rgb") + ".jpg"), np.zeros((32, 48, 3), np.uint8))
        lines.append(f"{base.format('rgb', 'rgb')}.jpg {base.format('depth', 'depth')}.png\n")
    lst = tmp_path / "vk.txt"
    lst.write_text("".join(lines))
    argv = ["filter", "--dataset", f"vkitti2={root}:{lst}", "--workers", "1", "--no-plots", "-q"]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 0
    rows = read_scores(tmp_path / "a" / "scores.csv")
    assert all(r["valid_fraction"] == pytest.approx(24 / 32) for r in rows)  # sky is invalid by default
    assert all(r["depth_max"] < 21.0 for r in rows)  # the 655.35 m sky code never counts
    # sky filled at the 100 m far plane is valid (the far plane is inclusive) and joins the histogram
    assert main([*argv, "--option", "vkitti2.sky_policy=far_plane", "-o", str(tmp_path / "b")]) == 0
    rows_b = read_scores(tmp_path / "b" / "scores.csv")
    assert all(r["valid_fraction"] == 1.0 and r["depth_max"] == 100.0 for r in rows_b)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["sources"][0]["options"] == {
        "sky_policy": "far_plane"
    }
