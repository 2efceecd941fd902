"""Hub names (``hf://ORG/REPO/FILE[@REV]``, aliases) through a Hugging Face cache built by the test; no network.

The cache has huggingface_hub's layout (``models--ORG--REPO/{refs/main, snapshots/<commit>/...}``) and every test
that reads it runs with ``HF_HUB_OFFLINE=1``; pushing and downloading go to a small fake Hub on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
import torch

import anydepth
from anydepth import hub
from anydepth.cli.main import main

pytest.importorskip("huggingface_hub")

REV_A = "a" * 40
REV_B = "b" * 40


def put(cache: Path, repo_id: str, rev: str, files: dict[str, bytes], *, main_ref: bool = True) -> None:
    """Write ``files`` into ``cache`` as snapshot ``rev`` of model repo ``repo_id`` (blobs + symlinks, like the Hub)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    if main_ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(rev)


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(
        "HF_ENDPOINT", "http://127.0.0.1:9"
    )  # were anything to go online, it would fail at once
    return cache


def encoder_bytes(seed: int, tmp: Path) -> bytes:
    torch.manual_seed(seed)
    f = tmp / f"enc{seed}.pth"
    torch.save(anydepth.create_model("sdt_test").encoder.backbone.state_dict(), f)
    return f.read_bytes()


def test_parse_hub_name() -> None:
    p = hub.parse_hub_name
    assert p("hf://org/repo/model.safetensors") == hub.HubName("org/repo", "model.safetensors", None)
    assert p("hf://org/repo/sub/dir/w.pth@v1.0") == hub.HubName("org/repo", "sub/dir/w.pth", "v1.0")
    assert p("anydepth/dav2_sdt_vitb") == hub.HubName("AIGeeksGroup/AnyDepth", "dav2_sdt_vitb.pth", None)
    assert p("anydepth/da3_sdt_vitl@" + REV_A) == hub.HubName(
        "AIGeeksGroup/AnyDepth", "da3_sdt_vitl.pth", REV_A
    )
    assert str(p("hf://org/repo/w.pth@main")) == "hf://org/repo/w.pth@main"
    for local in ("model.safetensors", "runs/x/model_best.safetensors", "/abs/w.pth", "org/repo/file.pth"):
        assert p(local) is None
    for bad in (
        "hf://org/repo",
        "hf://org//w.pth",
        "hf://org/repo/w.pth@",
        "hf://-x/repo/w.pth",
        "hf://o/r/../w",
    ):
        with pytest.raises(ValueError, match="hf://"):
            p(bad)


def test_aliases_match_the_official_releases() -> None:
    from anydepth.models.official import RELEASES

    for name, rel in RELEASES.items():
        h = hub.parse_hub_name(f"anydepth/{name}")
        assert h is not None
        assert f"https://huggingface.co/{h.repo_id}/resolve/main/{h.filename}" == rel["url"]


def test_local_paths_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "anydepth").mkdir()
    (tmp_path / "anydepth" / "dav2_sdt_vitb").write_bytes(b"local")
    assert hub.resolve_weights("anydepth/dav2_sdt_vitb") == Path("anydepth/dav2_sdt_vitb")
    assert hub.resolve_weights(tmp_path / "missing.pth") == tmp_path / "missing.pth"  # checked by the caller
    assert not hub.is_hub_name("anydepth/dav2_sdt_vitb")


def test_decoder_checkpoint_and_encoder_from_the_cache(offline_cache: Path, tmp_path: Path) -> None:
    enc_a, enc_b = encoder_bytes(1, tmp_path), encoder_bytes(2, tmp_path)
    # encoder repo: main = revision B, revision A pinned by commit hash
    put(offline_cache, "meta/enc", REV_A, {"weights/enc.pth": enc_a}, main_ref=False)
    put(offline_cache, "meta/enc", REV_B, {"weights/enc.pth": enc_b})
    enc_a_name = f"hf://meta/enc/weights/enc.pth@{REV_A}"
    model = anydepth.create_model("sdt_test", encoder_weights=enc_a_name)
    assert model.encoder_source is not None and REV_A in model.encoder_source["path"]
    ckpt = anydepth.save_model(model, tmp_path / "m.safetensors")
    put(offline_cache, "me/model", REV_A, {"model.safetensors": ckpt.read_bytes()})

    loaded = anydepth.load_model("hf://me/model/model.safetensors", encoder_weights=enc_a_name)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # main of the encoder repo is another encoder: the SHA-256 recorded in the checkpoint rejects it
    with pytest.raises(ValueError, match="differ from those the checkpoint"):
        anydepth.load_model(
            "hf://me/model/model.safetensors", encoder_weights="hf://meta/enc/weights/enc.pth"
        )
    with pytest.raises(FileNotFoundError, match="anydepth download"):
        anydepth.load_model("hf://me/model/other.safetensors")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        anydepth.load_model("anydepth/dav2_sdt_vitb")


def test_sha256sums_checked(offline_cache: Path) -> None:
    data = b"weights"
    good = hashlib.sha256(data).hexdigest()
    put(offline_cache, "o/ok", REV_A, {"w.bin": data, hub.SUMS_FILE: f"{good}  w.bin\n".encode()})
    assert hub.resolve_weights("hf://o/ok/w.bin").read_bytes() == data
    put(offline_cache, "o/bad", REV_A, {"w.bin": data, hub.SUMS_FILE: f"{'0' * 64}  w.bin\n".encode()})
    with pytest.raises(ValueError, match="SHA256SUMS"):
        hub.resolve_weights("hf://o/bad/w.bin")


def test_cli_download_and_errors(offline_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(offline_cache, "AIGeeksGroup/AnyDepth", REV_A, {"dav2_sdt_vitb.pth": b"x"})
    assert (
        main(["download", "anydepth/dav2_sdt_vitb", f"hf://AIGeeksGroup/AnyDepth/dav2_sdt_vitb.pth@{REV_A}"])
        == 0
    )
    out = capsys.readouterr().out.split()
    assert len(out) == 2 and all(Path(p).read_bytes() == b"x" for p in out)
    assert main(["download", "model.pth"]) == 2
    assert "not a Hub name" in capsys.readouterr().err
    assert main(["download", "hf://AIGeeksGroup/AnyDepth/da3_sdt_vitl.pth"]) == 2
    assert "anydepth download" in capsys.readouterr().err


class FakeHub:
    """A tiny in-memory Hugging Face Hub on 127.0.0.1: create repo, commit (regular files), resolve files.

    Implements the few HTTP routes huggingface_hub uses for ``create_repo``, ``upload_folder`` (validate-yaml,
    preupload answered with ``uploadMode: regular``, NDJSON commit) and ``hf_hub_download`` (HEAD/GET resolve).
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[tuple[str, str, str]] = []  # (repo_id, revision, commit hash)
        self.auth: list[str | None] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, obj: object) -> None:
                self._reply(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                hub.auth.append(self.headers.get("Authorization"))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo_id = (
                        f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    )
                    hub.repos.setdefault(repo_id, {})
                    return self._json({"url": f"{hub.url}/{repo_id}"})
                if path == "/api/validate-yaml":
                    return self._json({})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if m is None:
                    return self._reply(404)
                repo_id, kind, rev = m.groups()
                if kind == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        }
                    )
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        v = item["value"]
                        hub.repos[repo_id][v["path"]] = base64.b64decode(v["content"])
                oid = hashlib.sha1(body).hexdigest()
                hub.commits.append((repo_id, rev, oid))
                return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                files = hub.repos.get(m.group(1), {}) if m else {}
                if m is None or m.group(3) not in files:
                    return self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound"})
                data = files[m.group(3)]
                commit = next(c for r, _, c in reversed(hub.commits) if r == m.group(1))
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                self._reply(
                    200,
                    data,
                    {"X-Repo-Commit": commit, "ETag": etag, "Content-Type": "application/octet-stream"},
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_push_then_download_through_a_local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    torch.manual_seed(0)
    model = anydepth.create_model("sdt_test")
    ckpt = anydepth.save_model(model, tmp_path / "m.safetensors")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"nyuv2": {"abs_rel": 0.05}}))
    with FakeHub() as fake:
        argv = [
            "push",
            str(ckpt),
            "me/depth",
            "--metrics",
            str(metrics),
            "--training-data",
            "synthetic rooms",
        ]
        assert main([*argv, "--endpoint", fake.url]) == 0
        files = fake.repos["me/depth"]
        assert sorted(files) == ["README.md", "SHA256SUMS", "metrics.json", "model.safetensors"]
        assert files["model.safetensors"] == ckpt.read_bytes()
        assert all(a == "Bearer hf_test_token" for a in fake.auth)
        card = files["README.md"].decode()
        for needle in (
            "license: apache-2.0",
            '"decoder": "sdt"',
            "synthetic rooms",
            '"abs_rel": 0.05',
            "## Licence",
        ):
            assert needle in card
        sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
        assert sums == {n: hashlib.sha256(b).hexdigest() for n, b in files.items() if n != "SHA256SUMS"}

        # and back: download into the cache (SHA256SUMS checked), load, same outputs
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        got = hub.resolve_weights("hf://me/depth/model.safetensors", endpoint=fake.url)
        assert got.is_relative_to(tmp_path / "cache") and got.read_bytes() == ckpt.read_bytes()
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(anydepth.load_model(got)(x), model(x))
        # a file altered on the Hub after SHA256SUMS was written is rejected after download
        files["model.safetensors"] = files["model.safetensors"][:-1] + b" "
        fake.commits.append(("me/depth", "main", "c" * 40))
        with pytest.raises(ValueError, match="SHA256SUMS"):
            hub.resolve_weights("hf://me/depth/model.safetensors", endpoint=fake.url)

        anydepth.save_model(model, tmp_path / "n.safetensors", repo_id="me/other")  # uses HF_ENDPOINT
        assert "No evaluation" in fake.repos["me/other"]["README.md"].decode()
    with pytest.raises(ValueError, match="ORG/REPO"):
        hub.push_checkpoint(ckpt, "no-slash")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    assert main(["push", str(bad), "me/x"]) == 2


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from anydepth.extras import require

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'anydepth\[hub\]'"):
        require("huggingface_hub", "Hub names")
    with pytest.raises(ImportError, match=r"anydepth\[hub\]"):
        hub.resolve_weights("hf://o/r/w.bin")
