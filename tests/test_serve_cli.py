"""``anydepth serve``: argument handling, token from flag or environment, Host defaults (uvicorn is stubbed)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import anydepth  # noqa: E402
from anydepth.cli import serve as serve_cli  # noqa: E402
from anydepth.cli.main import main  # noqa: E402


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    """Replace ``uvicorn.Server.run`` so ``anydepth serve`` returns instead of serving; keep the config."""
    configs: list[uvicorn.Config] = []

    def fake_run(self: uvicorn.Server, sockets: object = None) -> None:
        configs.append(self.config)

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.delenv(serve_cli.TOKEN_ENV, raising=False)
    return configs


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_preset_defaults_to_localhost_without_token(
    captured: list, capsys: pytest.CaptureFixture
) -> None:
    assert main(["serve", "--model", "sdt_test", "--size", "32", "--device", "cpu"]) == 0
    (cfg,) = captured
    assert cfg.host == "127.0.0.1" and cfg.port == 8000
    assert cfg.limit_concurrency is not None and cfg.limit_concurrency >= 16
    assert "http://127.0.0.1:8000/" in capsys.readouterr().err
    with TestClient(cfg.app, base_url="http://127.0.0.1") as c:
        m = c.get("/v1/model").json()
        assert (
            m["preset"] == "sdt_test" and m["random_decoder"] is True and m["defaults"]["resolution"] == "32"
        )
        r = c.post("/v1/predict", files={"image": ("a.png", png(), "image/png")}, data={"format": "npy"})
        assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (32, 48)
        assert c.get("/v1/health", headers={"host": "evil.example"}).status_code == 400


def test_token_from_environment_and_flag(captured: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(serve_cli.TOKEN_ENV, "env-token-abcdefgh")
    assert main(["serve", "--model", "sdt_test", "--port", "8123", "--device", "cpu"]) == 0
    assert main(["serve", "--model", "sdt_test", "--token", "flag-token-abcdefgh", "--device", "cpu"]) == 0
    env_app, flag_app = captured[0].app, captured[1].app
    assert captured[0].port == 8123
    with TestClient(env_app, base_url="http://127.0.0.1") as c:
        assert c.get("/v1/health").status_code == 401
        assert c.get("/v1/health", headers={"Authorization": "Bearer env-token-abcdefgh"}).status_code == 200
    with TestClient(flag_app, base_url="http://127.0.0.1") as c:
        assert c.get("/v1/health", headers={"Authorization": "Bearer env-token-abcdefgh"}).status_code == 401
        assert c.get("/v1/health", headers={"Authorization": "Bearer flag-token-abcdefgh"}).status_code == 200


def test_checkpoint_loading_and_non_loopback_host(
    captured: list, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = tmp_path / "tiny.safetensors"
    anydepth.save_model(anydepth.create_model("sdt_test"), ckpt)
    with caplog.at_level(logging.WARNING):
        assert main(["serve", "--checkpoint", str(ckpt), "--host", "0.0.0.0", "--device", "cpu"]) == 0
    assert "without a token" in caplog.text
    cfg = captured[0]
    assert cfg.host == "0.0.0.0"
    with TestClient(cfg.app, base_url="http://192.0.2.10:8000") as c:  # any Host accepted off loopback
        m = c.get("/v1/model").json()
        assert m["checkpoint"] == "tiny.safetensors" and m["name"] == "sdt_test"
    assert serve_cli.resolve_allowed_hosts("0.0.0.0", "depth.lan, 10.0.0.5") == ["depth.lan", "10.0.0.5"]
    assert serve_cli.resolve_allowed_hosts("0.0.0.0", "*") is None
    assert "::1" in serve_cli.resolve_allowed_hosts("127.0.0.1", None)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["serve", "--model", "sdt_test", "--checkpoint", "x.safetensors"],
        ["serve", "--model", "sdt_test", "--port", "70000"],
        ["serve", "--model", "sdt_test", "--size", "huge"],
        ["serve", "--model", "sdt_test", "--max-upload-mb", "0"],
        ["serve", "--checkpoint", "/no/such/file.safetensors"],
    ],
)
def test_usage_errors_exit_2(captured: list, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    assert "anydepth serve: error:" in capsys.readouterr().err
    assert not captured


def test_access_log_hides_the_login_token() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", "/?token=abc&x=1", "1.1", 303), None)  # fmt: skip
    assert serve_cli._RedactToken().filter(record)
    assert record.getMessage() == '127.0.0.1:1 - "GET /?token=***&x=1 HTTP/1.1" 303'


def test_serve_fast_path(captured: list) -> None:
    assert main(["serve", "--model", "sdt_test", "--size", "32", "--device", "cpu", "--fast"]) == 0
    (cfg,) = captured
    with TestClient(cfg.app, base_url="http://127.0.0.1") as c:
        assert c.get("/v1/model").json()["fast"] is True
        r = c.post("/v1/predict", files={"image": ("a.png", png(), "image/png")}, data={"format": "npy"})
        assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (32, 48)
