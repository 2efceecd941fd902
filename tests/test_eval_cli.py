"""``anydepth eval`` and ``anydepth compare`` run in-process on tiny layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from anydepth.cli.main import main
from test_eval_datasets import write_kitti, write_nyu
from test_eval_evaluate import _gt_disparity_predictions


@pytest.fixture()
def nyu_setup(tmp_path: Path) -> tuple[Path, Path]:
    data, preds = tmp_path / "data", tmp_path / "preds"
    write_nyu(data / "nyuv2", n=3)
    _gt_disparity_predictions(data / "nyuv2", "nyuv2", preds / "nyuv2")
    return data, preds


def _eval(data: Path, preds: Path, out: Path, *extra: str) -> int:
    argv = ["eval", "--predictions", str(preds), "--pred-space", "disparity", "--benchmark", "nyuv2"]
    return main([*argv, "--data-root", str(data), "--output", str(out), "--no-progress", *extra])


def test_eval_predictions_writes_outputs(nyu_setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, preds = nyu_setup
    out = tmp_path / "out"
    assert _eval(data, preds, out) == 0
    doc = json.loads((out / "metrics.json").read_text())
    b = doc["benchmarks"]["nyuv2"]
    assert b["metrics"]["abs_rel"] == pytest.approx(0.0, abs=1e-6) and b["metrics"]["delta1"] == 1.0
    assert b["num_samples"] == 3 and b["expected_num_samples"] == 654 and b["complete"] is True
    assert b["alignment"] == "least_square_disparity" and b["eval_mask"] == "nyu_eigen"
    assert b["pred_space"] == "disparity_affine_invariant" and b["data_source"] == "dir"
    assert doc["source"]["kind"] == "predictions" and doc["anydepth_version"] and doc["errors"] == {}
    rows = list(csv.DictReader((out / "per_sample.csv").open()))
    assert len(rows) == 3 and rows[0]["benchmark"] == "nyuv2" and "abs_rel" in rows[0] and "scale" in rows[0]
    table = (out / "table.md").read_text()
    assert "NYUv2 AbsRel↓ / δ1↑" in table and "| preds | 0.0 / 100.0 |" in table
    assert "0.0 / 100.0" in capsys.readouterr().out


def test_eval_refuses_to_overwrite(nyu_setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, preds = nyu_setup
    out = tmp_path / "out"
    assert _eval(data, preds, out) == 0
    before = (out / "metrics.json").read_bytes()
    assert _eval(data, preds, out, "--limit", "1") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    assert _eval(data, preds, out, "--limit", "1", "--overwrite", "--allow-missing") == 0
    assert json.loads((out / "metrics.json").read_text())["benchmarks"]["nyuv2"]["num_samples"] == 1


def test_eval_missing_sample_fails_unless_allowed(
    nyu_setup: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    data, preds = nyu_setup
    victim = next((preds / "nyuv2").rglob("*.npy"))
    victim.unlink()
    assert _eval(data, preds, tmp_path / "strict") == 1
    err = capsys.readouterr().err
    assert str(victim) in err and "could not be scored" in err
    doc = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    assert doc["benchmarks"] == {} and "nyuv2" in doc["errors"]
    assert _eval(data, preds, tmp_path / "relaxed", "--allow-missing") == 0
    b = json.loads((tmp_path / "relaxed" / "metrics.json").read_text())["benchmarks"]["nyuv2"]
    assert b["complete"] is False and b["num_samples"] == 2 and str(victim) in b["failures"][0]["error"]
    assert "incomplete" in capsys.readouterr().err
    assert "*" in (tmp_path / "relaxed" / "table.md").read_text()


def test_eval_several_benchmarks_and_compare(nyu_setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, preds = nyu_setup
    write_kitti(data / "kitti")
    _gt_disparity_predictions(data / "kitti", "kitti", preds / "kitti", scale=2.0, shift=0.1)
    out1 = tmp_path / "r1"
    argv = ["eval", "--predictions", str(preds), "--pred-space", "disparity", "--benchmark", "nyuv2", "kitti"]
    assert main([*argv, "--data-root", str(data), "--output", str(out1), "--no-progress"]) == 0
    doc = json.loads((out1 / "metrics.json").read_text())
    assert list(doc["benchmarks"]) == ["nyuv2", "kitti"]
    assert doc["benchmarks"]["kitti"]["crop"] == "kb" and doc["benchmarks"]["kitti"]["input_sizes"] == [
        [352, 1216]
    ]
    out2 = tmp_path / "r2"
    assert (
        main(
            [
                *argv[:-2],
                "kitti",
                "--kitti-mask",
                "garg_full",
                "--alignment",
                "median",
                "--data-root",
                str(data),
                "--output",
                str(out2),
                "--no-progress",
                "--label",
                "median",
            ]
        )
        == 0
    )
    k2 = json.loads((out2 / "metrics.json").read_text())["benchmarks"]["kitti"]
    assert k2["eval_mask"] == "kitti_garg_full" and k2["alignment"] == "median"
    capsys.readouterr()
    assert main(["compare", str(out1), str(out2 / "metrics.json"), "--metrics", "abs_rel,delta1,rmse"]) == 0
    table = capsys.readouterr().out
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| Method | NYUv2") and "KITTI" in lines[0]
    assert lines[1].startswith("| preds | 0.0 / 100.0 / 0.000 |") and lines[2].startswith("| median | – |")


def test_eval_all_reports_missing_benchmarks(nyu_setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, preds = nyu_setup
    rc = main(
        [
            "eval",
            "--predictions",
            str(preds),
            "--pred-space",
            "disparity",
            "--benchmark",
            "all",
            "--data-root",
            str(data),
            "--output",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert rc == 1
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(doc["benchmarks"]) == ["nyuv2"]
    assert set(doc["errors"]) == {"kitti", "eth3d", "scannet", "diode"}
    assert "not found" in doc["errors"]["kitti"]


def test_eval_model_preset_end_to_end(tmp_path: Path) -> None:
    write_nyu(tmp_path / "data", n=2, hw=(48, 64))
    out = tmp_path / "o"
    rc = main(
        [
            "eval",
            "--model",
            "sdt_test",
            "--benchmark",
            "nyuv2",
            "--data-root",
            str(tmp_path / "data"),
            "--output",
            str(out),
            "--processing-res",
            "64",
            "--flip-tta",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    b = doc["benchmarks"]["nyuv2"]
    assert doc["source"]["model"] == "sdt_test" and doc["source"]["weights"] == "random"
    assert b["predictor"]["flip_tta"] is True and b["predictor"]["processing_res"] == 64
    assert b["processing_sizes"] == [[48, 64]] and np.isfinite(b["metrics"]["abs_rel"])


def test_eval_usage_errors(tmp_path: Path, capsys) -> None:
    base = ["eval", "--benchmark", "nyuv2", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")]
    assert main([*base, "--predictions", str(tmp_path)]) == 2
    assert "--pred-space is required" in capsys.readouterr().err
    assert main([*base, "--predictions", str(tmp_path), "--pred-space", "inverse"]) == 2
    assert "unknown prediction space" in capsys.readouterr().err
    assert main([*base, "--model", "sdt_test", "--alignment-max-res", "big"]) == 2
    assert main(["compare", str(tmp_path / "nothing.json")]) == 2
    assert "result file not found" in capsys.readouterr().err


def test_eval_takes_the_onnx_backend_like_infer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--backend onnxruntime --onnx FILE`` goes through the shared runner builder (the ONNX runner itself is
    covered by test_export_onnx; here a stand-in runs the same model, so the metrics must be identical)."""
    import torch

    import anydepth
    import anydepth.export.onnx_runtime as ort_mod
    from anydepth.inference import TorchRunner

    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test").eval()
    ckpt = anydepth.save_model(model, tmp_path / "m.safetensors")
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"stand-in")
    opened: list[str] = []

    def fake_onnx_runner(path: object) -> TorchRunner:
        opened.append(str(path))
        return TorchRunner(model)

    monkeypatch.setattr(ort_mod, "OnnxRunner", fake_onnx_runner)
    write_nyu(tmp_path / "data", n=2, hw=(48, 64))
    common = ["--benchmark", "nyuv2", "--data-root", str(tmp_path / "data"), "--processing-res", "64"]
    docs = {}
    for name, src in (("torch", ["--checkpoint", str(ckpt)]),
                      ("onnx", ["--backend", "onnxruntime", "--onnx", str(onnx_path)])):  # fmt: skip
        out = tmp_path / name
        assert main(["eval", *src, *common, "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
        docs[name] = json.loads((out / "metrics.json").read_text())
    assert opened == [str(onnx_path)]
    assert docs["onnx"]["source"]["onnx"] == str(onnx_path) and docs["onnx"]["source"]["checkpoint"] is None
    assert docs["onnx"]["benchmarks"]["nyuv2"]["metrics"] == docs["torch"]["benchmarks"]["nyuv2"]["metrics"]
    # --onnx is one of the exclusive model sources and needs its backend
    assert main(["eval", "--onnx", str(onnx_path), *common, "--output", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        main(["eval", "--onnx", str(onnx_path), "--checkpoint", str(ckpt), *common, "--output", "y"])


def test_eval_passes_hub_names_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--checkpoint`` / ``--encoder-weights`` keep ``hf://`` names intact (a path type would fold ``//``)."""
    import anydepth

    asked: list[tuple[str, str]] = []

    def fake_load_model(name: str, encoder_weights: str) -> object:
        asked.append((name, encoder_weights))
        return anydepth.create_model("sdt_test")

    monkeypatch.setattr(anydepth, "load_model", fake_load_model)
    write_nyu(tmp_path / "data", n=1, hw=(48, 64))
    ckpt, enc = "hf://org/repo/sub/model.safetensors@v1", "hf://org/enc/dinov3.pth"
    argv = ["eval", "--checkpoint", ckpt, "--encoder-weights", enc, "--benchmark", "nyuv2", "--data-root"]
    argv += [str(tmp_path / "data"), "--processing-res", "64", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert asked == [(ckpt, enc)] and doc["source"]["checkpoint"] == ckpt and doc["label"] == "model"
