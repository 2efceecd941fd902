"""Sharding (``anydepth.shard``) and the sharded filter: two CPU processes + merge == one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anydepth.cli.main import main
from anydepth.data.datasets.folder import FolderDataset
from anydepth.data.datasets.synthetic import write_synthetic_dataset
from anydepth.data.filtering import Source, filter_index
from anydepth.data.filtering.report import PROGRESS_COLUMNS, read_scores
from anydepth.shard import (
    Shard,
    is_complete,
    mark_complete,
    merge_rows,
    parse_shard,
    resolve_shard,
    shard_dir,
    shard_dirs,
    shard_from_env,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_parse_and_env() -> None:
    assert parse_shard("0/2") == Shard(0, 2) and str(parse_shard("3/4")) == "3/4"
    for bad in ("2/2", "-1/2", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}) == Shard(2, 3)
    with pytest.raises(ValueError, match="RANK"):
        shard_from_env({"RANK": "3", "WORLD_SIZE": "3"})
    # the flag wins over the environment
    assert resolve_shard("1/4", {"RANK": "0", "WORLD_SIZE": "2"}) == Shard(1, 4)
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)


def test_assignment_is_a_partition_and_merge_restores_order() -> None:
    items = [f"img{i:03d}" for i in range(23)]
    for n in (1, 2, 3, 5, 30):
        parts = [Shard(k, n).take(items) for k in range(n)]
        assert sorted(x for p in parts for x in p) == sorted(items)
        assert all(Shard(k, n).owns(items.index(x)) for k in range(n) for x in parts[k])
        # shards may return their rows in any order
        assert merge_rows([reversed(p) for p in parts], key=lambda r: r, order=items) == items
    halves = [Shard(0, 2).take(items), Shard(1, 2).take(items)]
    with pytest.raises(ValueError, match="missing"):
        merge_rows(halves[:1], key=lambda r: r, order=items)
    assert merge_rows(halves[:1], key=lambda r: r, order=items, allow_missing=True) == halves[0]
    with pytest.raises(ValueError, match="two shards"):
        merge_rows([halves[0], halves[0][:1]], key=lambda r: r, order=items)
    with pytest.raises(ValueError, match="not in the job"):
        merge_rows([["other"]], key=lambda r: r, order=items)


def test_shard_dirs_and_markers(tmp_path: Path) -> None:
    assert shard_dirs(tmp_path) == []
    d0, d1 = shard_dir(tmp_path, Shard(0, 2)), shard_dir(tmp_path, Shard(1, 2))
    d1.mkdir(parents=True)
    d0.mkdir()
    assert shard_dirs(tmp_path) == [(Shard(0, 2), d0), (Shard(1, 2), d1)]
    assert not is_complete(d0)
    mark_complete(d0, Shard(0, 2), {"items": 5})
    assert is_complete(d0)
    shard_dir(tmp_path, Shard(0, 3)).mkdir()
    with pytest.raises(ValueError, match="different counts"):
        shard_dirs(tmp_path)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("syn_a"), tmp_path_factory.mktemp("syn_b")
    write_synthetic_dataset(a, 9, (40, 48), seed=1)
    write_synthetic_dataset(b, 6, (32, 40), seed=2)
    return a, b


def _outputs(out: Path) -> dict[str, bytes]:
    files = {f: (out / f).read_bytes() for f in ("scores.csv", "summary.json", "summary.md")}
    files.update({f"lists/{p.name}": p.read_bytes() for p in sorted((out / "lists").iterdir())})
    return files


def test_two_processes_then_merge_equal_one_run(tmp_path: Path, data: tuple[Path, Path]) -> None:
    a, b = data
    common = ["filter", "--dataset", f"folder@a={a}", "--dataset", f"folder@b={b}", "--no-plots", "-q"]
    single = tmp_path / "single"
    assert main([*common, "--output", str(single), "--workers", "1"]) == 0

    sharded = tmp_path / "sharded"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "anydepth.cli.main", *common, "--output", str(sharded), "--workers", "1"]
    # shard 0 by flag, shard 1 as torchrun would start it (RANK / WORLD_SIZE only)
    procs = [
        subprocess.Popen([*cmd, "--shard", "0/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        subprocess.Popen(
            cmd, env={**env, "RANK": "1", "WORLD_SIZE": "2"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ),
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()
    assert not (sharded / "scores.csv").exists()  # shards only score
    dirs = shard_dirs(sharded)
    assert [s for s, _ in dirs] == [Shard(0, 2), Shard(1, 2)] and all(is_complete(d) for _, d in dirs)
    counts = [len(read_scores(d / "scores.progress.csv", PROGRESS_COLUMNS)) for _, d in dirs]
    assert counts == [8, 7]  # 15 samples, strided over the two shards

    res = filter_index(
        [
            Source("a", FolderDataset(a), kind="folder", root=str(a)),
            Source("b", FolderDataset(b), kind="folder", root=str(b)),
        ],
        sharded,
        plots=False,
        parquet=False,
    )
    assert res.complete and res.n_scored == 0 and res.n_resumed == 15  # the merge scores nothing itself
    merged_cli = tmp_path / "merged_cli"
    (merged_cli / "shards").mkdir(parents=True)
    for s, d in dirs:  # a copy of the shard directories, merged by the CLI
        (merged_cli / "shards" / s.name).mkdir()
        for f in d.iterdir():
            (merged_cli / "shards" / s.name / f.name).write_bytes(f.read_bytes())
    assert main([*common, "--output", str(merged_cli)]) == 0
    assert _outputs(sharded) == _outputs(single) == _outputs(merged_cli)


def test_merge_with_a_missing_shard_scores_the_rest(tmp_path: Path, data: tuple[Path, Path]) -> None:
    a, _ = data
    src = [Source("a", FolderDataset(a), kind="folder", root=str(a))]
    single = filter_index(src, tmp_path / "single", plots=False, parquet=False)
    part = filter_index(src, tmp_path / "out", plots=False, parquet=False, shard=Shard(1, 3))
    assert not part.complete and part.n_total == 3 and part.output == tmp_path / "out" / "shards" / "1-of-3"
    merged = filter_index(src, tmp_path / "out", plots=False, parquet=False)
    assert merged.n_resumed == 3 and merged.n_scored == 6
    assert _outputs(tmp_path / "out") == _outputs(single.output)
