"""Safety of ``anydepth serve``: bad uploads give clear 4xx JSON errors, limits, bearer token, Host and Origin.

Every bad input must be answered with a 4xx JSON body ``{"detail", "status"}`` (never a 500), and the service
must keep answering afterwards.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from anydepth.serve.app import create_app  # noqa: E402
from anydepth.serve.security import (  # noqa: E402
    ApiError,
    cookie_value,
    decode_image,
    host_of,
    token_matches,
)
from anydepth.types import DepthSpace  # noqa: E402

BASE = "http://127.0.0.1"
TOKEN = "s3cret-token-for-tests-0123456789"


class MeanRunner:
    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
    device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) + 0.5


def png(h: int = 32, w: int = 48) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def client():
    app = create_app(MeanRunner(), default_resolution="native", max_upload_bytes=200_000, max_pixels=500_000,
                     batch_wait_ms=0)  # fmt: skip
    with TestClient(app, base_url=BASE) as c:
        yield c


def post(client: TestClient, payload: bytes, ctype: str = "image/png", **kw):
    return client.post("/v1/predict", files={"image": ("upload.png", payload, ctype)}, **kw)


def assert_json_error(r, status: int, needle: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    d = r.json()
    assert d["status"] == status and needle in d["detail"], d


# ------------------------------------------------------------------------------------------------------------
# Bad uploads
# ------------------------------------------------------------------------------------------------------------


def test_non_image_bytes(client: TestClient) -> None:
    assert_json_error(
        post(client, b"this is not an image, just some text " * 10), 400, "not a readable image"
    )
    assert_json_error(post(client, b""), 400, "empty")


def test_truncated_png(client: TestClient) -> None:
    data = png(64, 64)
    assert_json_error(post(client, data[: len(data) // 2]), 400, "truncated or corrupt")
    assert_json_error(post(client, data[:40]), 400, "")  # cut inside the header


def test_decompression_bomb_headers(client: TestClient) -> None:
    # over the service's limit (500,000 pixels) but under Pillow's own: refused by the declared size
    assert_json_error(post(client, png_declaring(1000, 1000)), 413, "1000x1000")
    # far over Pillow's own limit as well (10^10 pixels): refused before any pixel is decoded
    assert_json_error(post(client, png_declaring(100_000, 100_000)), 413, "too large")
    assert Image.MAX_IMAGE_PIXELS == 89478485 or Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 0


def test_pillow_global_limit_is_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ApiError) as e:
        decode_image(png_declaring(2000, 2000), max_pixels=1000)
    assert e.value.status == 413
    assert decode_image(png(8, 8), max_pixels=64).rgb.shape == (8, 8, 3)
    assert Image.MAX_IMAGE_PIXELS == before


def test_oversize_upload_with_content_length(client: TestClient) -> None:
    big = b"\x89PNG" + bytes(300_000)
    assert_json_error(post(client, big), 413, "upload too large")


def test_oversize_upload_streamed_is_cut_off_early() -> None:
    """Drive the ASGI app directly: the body arrives in 64 KiB messages without Content-Length; the service
    must answer 413 after reading just past the limit, not after the whole 6.4 MB."""
    app = create_app(MeanRunner(), max_upload_bytes=200_000)
    boundary = "----anydepthtestboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()  # fmt: skip
    chunks = [head] + [b"\0" * 65536] * 100 + [f"\r\n--{boundary}--\r\n".encode()]
    consumed = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal consumed
        if consumed < len(chunks):
            consumed += 1
            return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b"upload too large" in b"".join(m.get("body", b"") for m in sent[1:])
    assert consumed <= 1 + 200_000 // 65536 + 2  # stopped just past the limit (64 KiB form overhead allowed)


@pytest.mark.parametrize(
    ("ctype", "body", "needle"),
    [
        ("application/json", b'{"image": "x"}', "multipart/form-data"),
        ("image/png", None, "multipart/form-data"),
        ("text/plain", b"hello", "multipart/form-data"),
    ],
)
def test_wrong_request_content_type(client: TestClient, ctype: str, body: bytes | None, needle: str) -> None:
    r = client.post(
        "/v1/predict", content=body if body is not None else png(), headers={"content-type": ctype}
    )
    assert_json_error(r, 415, needle)


def test_wrong_part_content_type(client: TestClient) -> None:
    assert_json_error(post(client, png(), ctype="text/plain"), 415, "expected image/*")
    assert_json_error(post(client, png(), ctype="application/pdf"), 415, "expected image/*")


def test_unsupported_formats(client: TestClient) -> None:
    img = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    for fmt, name in (("PPM", "PBM/PGM/PPM"), ("ICO", "ICO")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        assert_json_error(post(client, buf.getvalue()), 415, f"unsupported image format {name}")
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(64)
    assert_json_error(post(client, heic, ctype="image/heic"), 415, "HEIC")
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'
    assert_json_error(post(client, svg, ctype="image/svg+xml"), 415, "SVG")


def test_malformed_forms(client: TestClient) -> None:
    assert_json_error(client.post("/v1/predict", data={"format": "json"}, files={"x": ("a", b"1")}), 400, "")
    r = client.post("/v1/predict", data={"format": "npy"}, files={"other": ("a.png", png(), "image/png")})
    assert r.status_code == 400
    r = client.post(
        "/v1/predict",
        content=b"--abc\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=abc"},
    )
    assert_json_error(r, 400, "multipart")
    r = client.post("/v1/predict", content=b"", headers={"content-type": "multipart/form-data"})
    assert_json_error(r, 400, "boundary")
    long = {"format": "x" * 5000}
    assert_json_error(post(client, png(), data=long), 400, "too long")
    two = [("image", ("a.png", png(), "image/png")), ("image", ("b.png", png(), "image/png"))]
    assert_json_error(client.post("/v1/predict", files=two), 400, "more than one")


def test_service_still_answers_after_bad_inputs(client: TestClient) -> None:
    for data in (b"junk", png()[:100], png_declaring(100_000, 100_000)):
        assert 400 <= post(client, data).status_code < 500
    r = post(client, png(32, 48), data={"format": "npy"})
    assert r.status_code == 200
    assert np.load(io.BytesIO(r.content)).shape == (32, 48)


def test_client_filename_is_never_used(client: TestClient) -> None:
    files = {"image": ("../../../../etc/passwd\x00.png", png(), "image/png")}
    r = client.post("/v1/predict", files=files, data={"format": "png16"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="anydepth_pred16.png"'


# ------------------------------------------------------------------------------------------------------------
# Bearer token
# ------------------------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/static/vendor/three.module.js"),
    ("GET", "/v1/health"),
    ("GET", "/v1/model"),
    ("GET", "/v1/colormaps"),
    ("GET", "/v1/examples"),
    ("GET", "/examples/synthetic_room.jpg"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/predict"),
    ("GET", "/no/such/route"),
]


@pytest.fixture(scope="module")
def auth_client():
    app = create_app(MeanRunner(), token=TOKEN, default_resolution="native", batch_wait_ms=0)
    with TestClient(app, base_url=BASE) as c:
        yield c


def request(c: TestClient, method: str, path: str, headers: dict | None = None):
    if method == "POST":
        return c.post(
            path, files={"image": ("a.png", png(), "image/png")}, data={"format": "npy"}, headers=headers
        )
    return c.get(path, headers=headers, follow_redirects=False)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_token_required_on_every_route(auth_client: TestClient, method: str, path: str) -> None:
    auth_client.cookies.clear()
    r = request(auth_client, method, path)
    assert_json_error(r, 401, "authentication required")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for bad in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
        assert request(auth_client, method, path, {"Authorization": bad}).status_code == 401, bad
    r = request(auth_client, method, path, {"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == (404 if path == "/no/such/route" else 200), r.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token_configured_means_open(client: TestClient, method: str, path: str) -> None:
    r = request(client, method, path)
    assert r.status_code == (404 if path == "/no/such/route" else 200)


def test_page_login_sets_a_session_cookie(auth_client: TestClient) -> None:
    auth_client.cookies.clear()
    assert auth_client.get("/?token=wrong", follow_redirects=False).status_code == 401
    r = auth_client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert auth_client.get("/").status_code == 200  # the cookie authenticates the page ...
    assert auth_client.get("/v1/model").status_code == 200  # ... and its API calls
    r = auth_client.post("/v1/predict", files={"image": ("a.png", png(), "image/png")})
    assert r.status_code == 200
    auth_client.cookies.clear()
    auth_client.cookies.set("anydepth_session", "0" * 64)
    assert auth_client.get("/v1/model").status_code == 401
    auth_client.cookies.clear()
    # the token is accepted in the query of the page URL only, never on API routes
    assert auth_client.get(f"/v1/model?token={TOKEN}").status_code == 401


def test_token_helpers() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert (
        not token_matches(TOKEN + "x", TOKEN)
        and not token_matches("", TOKEN)
        and not token_matches(None, TOKEN)
    )
    assert cookie_value(TOKEN) != TOKEN and len(cookie_value(TOKEN)) == 64
    with pytest.raises(ValueError, match="non-empty"):
        create_app(MeanRunner(), token="  ")


# ------------------------------------------------------------------------------------------------------------
# Host allow-list and same-origin POSTs
# ------------------------------------------------------------------------------------------------------------


def test_host_allow_list(client: TestClient) -> None:
    assert_json_error(client.get("/v1/health", headers={"host": "evil.example"}), 400, "Host")
    assert_json_error(client.get("/v1/health", headers={"host": "127.0.0.1.evil.example:8000"}), 400, "Host")
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/v1/health", headers={"host": host}).status_code == 200, host
    open_app = create_app(MeanRunner(), allowed_hosts=None)
    with TestClient(open_app, base_url="http://depth.example") as c:
        assert c.get("/v1/health").status_code == 200
    assert (
        host_of("[::1]:80") == "::1" and host_of("Example.COM:1") == "example.com" and host_of("::1") == "::1"
    )


def test_cross_origin_post_is_refused(client: TestClient) -> None:
    files = {"image": ("a.png", png(), "image/png")}
    r = client.post("/v1/predict", files=files, headers={"origin": "http://evil.example"})
    assert_json_error(r, 403, "cross-origin")
    assert client.post("/v1/predict", files=files, headers={"origin": "null"}).status_code == 403
    assert client.post("/v1/predict", files=files, headers={"origin": BASE}).status_code == 200
    assert client.get("/v1/health", headers={"origin": "http://evil.example"}).status_code == 200
