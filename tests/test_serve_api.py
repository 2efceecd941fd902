"""HTTP API of ``anydepth serve``: every output format, options, the small GET endpoints, the page and OpenAPI.

In-process (Starlette's TestClient), with the tiny ``sdt_test`` model (random weights, output bias 1 so the
prediction is not constant) or a known-answer runner.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

import anydepth  # noqa: E402
from anydepth.data.pointcloud import read_ply  # noqa: E402
from anydepth.inference import predict  # noqa: E402
from anydepth.ops.colormap import apply_colormap, colormap_lut, robust_range  # noqa: E402
from anydepth.ops.geometry import focal_from_fov  # noqa: E402
from anydepth.serve.app import STATIC_DIR, create_app  # noqa: E402
from anydepth.types import DepthSpace  # noqa: E402

BASE = "http://127.0.0.1"


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = anydepth.create_model("sdt_test")
    with torch.no_grad():
        m.decoder.head.conv_out.bias.fill_(1.0)  # random weights give a constant 1e-3 otherwise
    return m.eval()


class MeanRunner:
    """Known answer: disparity = mean over RGB + 0.5 per pixel (exact at native size)."""

    patch_size = 16
    output_space = DepthSpace.DISPARITY_AFFINE_INVARIANT
    device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) + 0.5


def rgb_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def client(model: torch.nn.Module):
    app = create_app(model, default_resolution="64", batch_wait_ms=0)
    with TestClient(app, base_url=BASE) as c:
        yield c


def post(client: TestClient, data: bytes, ctype: str = "image/png", **fields: str):
    return client.post("/v1/predict", files={"image": ("upload.png", data, ctype)}, data=fields)


# ------------------------------------------------------------------------------------------------------------
# Output formats
# ------------------------------------------------------------------------------------------------------------


def test_json_has_the_fields_and_matches_the_library(client: TestClient, model: torch.nn.Module) -> None:
    img = rgb_image()
    r = post(client, encode(img))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    d = r.json()
    for key in ("width", "height", "space", "metric", "intrinsics", "intrinsics_source", "value_range",
                "color_range", "proc_hw", "resolution", "depth", "timing", "value", "model", "fov_deg"):  # fmt: skip
        assert key in d, key
    assert (d["width"], d["height"]) == (64, 48)
    assert d["space"] == "disparity_affine_invariant" and d["metric"] is False
    assert d["model"] == "sdt_test" and d["resolution"] == "short:64" and d["proc_hw"] == [64, 80]
    assert d["intrinsics_source"] == "default_fov" and d["fov_deg"] == pytest.approx(60.0)
    assert d["intrinsics"]["fx"] == pytest.approx(focal_from_fov(64, 60.0))
    assert (d["intrinsics"]["cx"], d["intrinsics"]["cy"]) == (31.5, 23.5)
    assert d["depth"]["mapping"] == "nominal"
    value = np.asarray(d["value"], dtype=np.float32)
    assert value.shape == (48, 64)
    expected = predict(model, img, resolution="64").value
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert d["value_range"] == pytest.approx([float(expected.min()), float(expected.max())], rel=1e-5)
    assert set(d["timing"]) >= {"decode_s", "queue_s", "forward_s", "encode_s"}


def test_png16_decodes_to_the_input_size_and_recovers_the_prediction(client: TestClient) -> None:
    img = rgb_image(40, 72, seed=1)
    r = post(client, encode(img), format="png16")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert "attachment" in r.headers["content-disposition"]
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (72, 40)
        assert im.mode.startswith("I;16") or im.mode == "I"
        q = np.asarray(im).astype(np.float64)
    assert q.min() == 0 and q.max() == 65535
    lo, hi = (float(x) for x in r.headers["x-anydepth-range"].split(","))
    npy = np.load(io.BytesIO(post(client, encode(img), format="npy").content))
    np.testing.assert_allclose(lo + q / 65535.0 * (hi - lo), npy, atol=(hi - lo) / 65535.0)


def test_npy_loads_as_float32_at_the_input_size(client: TestClient) -> None:
    r = post(client, encode(rgb_image(50, 30)), format="npy")
    assert r.status_code == 200, r.text
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (50, 30) and np.isfinite(arr).all()
    assert r.headers["x-anydepth-space"] == "disparity_affine_invariant"
    assert json.loads(r.headers["x-anydepth-intrinsics"])["cx"] == pytest.approx(14.5)


def test_color_is_the_colour_mapped_prediction(client: TestClient) -> None:
    img = rgb_image()
    r = post(client, encode(img), format="color", colormap="viridis")
    assert r.status_code == 200, r.text
    color = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    value = np.load(io.BytesIO(post(client, encode(img), format="npy").content))
    lo, hi = robust_range(value, 1.0, 99.0)
    np.testing.assert_array_equal(color, apply_colormap(value, "viridis", vmin=lo, vmax=hi))
    assert r.headers["x-anydepth-range"] == f"{lo!r},{hi!r}"


def test_ply_header_is_valid_and_points_follow_the_fov(client: TestClient, tmp_path: Path) -> None:
    img = rgb_image()
    r = post(client, encode(img), format="ply", fov="90")
    assert r.status_code == 200, r.text
    header = r.content[: r.content.index(b"end_header\n") + 11].decode("ascii")
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    for line in ("property float x", "property float y", "property float z", "property uchar red"):
        assert line in header
    assert "metric: NO" in header
    n = int(header.split("element vertex ")[1].split("\n")[0])
    assert n == int(r.headers["x-anydepth-points"]) and 0 < n <= 48 * 64
    assert len(r.content) == len(header) + 15 * n
    path = tmp_path / "cloud.ply"
    path.write_bytes(r.content)
    pts, cols, comments = read_ply(path)
    assert pts.shape == (n, 3) and cols is not None and cols.shape == (n, 3)
    assert (pts[:, 2] >= 1.0 - 1e-5).all() and (pts[:, 2] <= 10.0 + 1e-4).all()  # nominal range 1..10
    # fov 90 degrees: fx = fy = W / 2 = 32 px; every point reprojects onto a pixel centre of the 64 x 48 image
    u = pts[:, 0] / pts[:, 2] * 32.0 + 31.5
    v = pts[:, 1] / pts[:, 2] * 32.0 + 23.5
    np.testing.assert_allclose(u, np.round(u), atol=1e-3)
    np.testing.assert_allclose(v, np.round(v), atol=1e-3)
    assert u.min() > -0.01 and u.max() < 63.01 and v.min() > -0.01 and v.max() < 47.01
    assert len(np.unique(np.round(u) * 100 + np.round(v))) == n  # one point per pixel (stride 1)
    assert any("fx 32.000000" in c for c in comments)


def test_json_include_embeds_the_files(client: TestClient) -> None:
    r = post(client, encode(rgb_image()), format="json", include="npy,png16,color,ply")
    assert r.status_code == 200, r.text
    d = r.json()
    assert "value" not in d
    arr = np.load(io.BytesIO(base64.b64decode(d["npy"])))
    assert arr.shape == (48, 64)
    assert Image.open(io.BytesIO(base64.b64decode(d["png16"]))).size == (64, 48)
    assert Image.open(io.BytesIO(base64.b64decode(d["color"]))).size == (64, 48)
    ply = base64.b64decode(d["ply"])
    assert ply.startswith(b"ply\n") and d["ply_points"] > 0 and d["ply_stride"] == 1


def test_known_answer_runner_exact_values() -> None:
    app = create_app(MeanRunner(), default_resolution="native", batch_wait_ms=0)
    img = rgb_image(32, 48)
    with TestClient(app, base_url=BASE) as c:
        r = c.post(
            "/v1/predict", files={"image": ("a.png", encode(img), "image/png")}, data={"format": "npy"}
        )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), img.mean(axis=2) / 255.0 + 0.5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Inputs and options
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("JPEG", {"quality": 95}), ("WEBP", {"quality": 95}), ("BMP", {}), ("TIFF", {}), ("GIF", {})],
)
def test_accepted_formats(client: TestClient, fmt: str, kwargs: dict) -> None:
    r = post(client, encode(rgb_image(), fmt, **kwargs), ctype="application/octet-stream", format="npy")
    assert r.status_code == 200, r.text
    assert np.load(io.BytesIO(r.content)).shape == (48, 64)


def test_grayscale_rgba_and_16bit_inputs(client: TestClient) -> None:
    gray = rgb_image()[..., 0]
    rgba = np.dstack([rgb_image(), np.full((48, 64), 128, np.uint8)])
    g16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    for arr in (gray, rgba, g16):
        r = post(client, encode(arr), format="npy")
        assert r.status_code == 200, r.text
        assert np.load(io.BytesIO(r.content)).shape == (48, 64)


def test_exif_orientation_and_focal_length_are_used(client: TestClient) -> None:
    img = rgb_image(48, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    exif.get_ifd(0x8769)[0xA405] = 28  # 35 mm equivalent focal length (mm)
    data = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    d = post(client, data, include="").json()
    assert (d["width"], d["height"]) == (48, 64)  # displayed upright: portrait
    assert d["intrinsics_source"] == "exif_35mm" and d["focal_35mm"] == 28.0
    d2 = post(client, data, include="", fov="50").json()
    assert d2["intrinsics_source"] == "fov" and d2["fov_deg"] == pytest.approx(50.0)


def test_resolution_option_sets_the_processing_size(client: TestClient) -> None:
    img = encode(rgb_image(48, 64))
    assert post(client, img, include="", resolution="32").json()["proc_hw"] == [32, 48]
    assert post(client, img, include="", resolution="native").json()["proc_hw"] == [48, 64]
    assert post(client, img, include="", resolution="32x32").json()["proc_hw"] == [32, 32]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"format": "tiff"}, "bad format"),
        ({"colormap": "rainbow"}, "unknown colormap"),
        ({"resolution": "big"}, "bad resolution"),
        ({"resolution": "-5"}, "must be positive"),
        ({"fov": "abc"}, "bad fov"),
        ({"fov": "0"}, "between 1 and 179"),
        ({"fov": "nan"}, "between 1 and 179"),
        ({"include": "value,secrets"}, "bad include"),
        ({"format": "png16", "include": "npy"}, "format=json only"),
        ({"colour": "x"}, "unknown form field"),
    ],
)
def test_bad_options_give_400(client: TestClient, fields: dict, needle: str) -> None:
    r = post(client, encode(rgb_image()), **fields)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]
    assert r.json()["status"] == 400


def test_processing_size_limit(model: torch.nn.Module) -> None:
    app = create_app(model, max_proc_pixels=64 * 64)
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/v1/predict", files={"image": ("a.png", encode(rgb_image()), "image/png")},
                   data={"resolution": "1024"})  # fmt: skip
    assert r.status_code == 400 and "processing size" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------------------
# Other endpoints, page, OpenAPI
# ------------------------------------------------------------------------------------------------------------


def test_health_model_colormaps_examples(client: TestClient) -> None:
    h = client.get("/v1/health").json()
    assert h["status"] == "ok" and h["queue"]["capacity"] == 16
    m = client.get("/v1/model").json()
    assert m["preset"] == "sdt_test" and m["output_space"] == "disparity_affine_invariant"
    assert (
        m["patch_size"] == 16 and m["parameters"]["total"] == anydepth.count_parameters(tiny_model())["total"]
    )
    assert m["limits"]["max_upload_bytes"] > 0 and m["defaults"]["resolution"] == "64"
    c = client.get("/v1/colormaps").json()
    assert "turbo_r" in c["names"] and c["default"] == "turbo"
    assert bytes.fromhex(c["tables"]["turbo"]) == colormap_lut("turbo").tobytes()
    ex = client.get("/v1/examples").json()["examples"]
    assert 2 <= len(ex) <= 3
    for e in ex:
        r = client.get(e["url"])
        assert r.status_code == 200 and len(r.content) == e["bytes"] < 100_000
        assert Image.open(io.BytesIO(r.content)).size[0] >= 64
        assert post(client, r.content, ctype="image/jpeg", include="").status_code == 200
    assert client.get("/examples/../app.py").status_code == 404
    assert client.get("/examples/nope.jpg").status_code == 404


def test_page_static_files_and_vendored_three(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'src="static/app.js"' in r.text and "importmap" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'sha256-" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    for path in ("static/app.js", "static/style.css", "static/vendor/three.module.js",
                 "static/vendor/three.core.js", "static/vendor/OrbitControls.js", "static/vendor/LICENSE-three.txt"):  # fmt: skip
        assert client.get("/" + path).status_code == 200, path
    html = (STATIC_DIR / "index.html").read_text()
    js = (STATIC_DIR / "app.js").read_text()
    for text in (html, js):  # everything is served locally: no CDN or absolute URL
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "MIT" in (STATIC_DIR / "vendor" / "LICENSE-three.txt").read_text()
    assert client.get("/static/../app.py").status_code == 404


def test_openapi_offline_and_docs_disabled(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post_op = spec["paths"]["/v1/predict"]["post"]
    schema = post_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["image"] and schema["properties"]["format"]["enum"] == [
        "json", "png16", "npy", "color", "ply"
    ]  # fmt: skip
    assert {"400", "401", "413", "415", "503"} <= set(post_op["responses"])
    for path in ("/v1/health", "/v1/model", "/v1/colormaps", "/v1/examples"):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_create_app_rejects_bad_arguments(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="max_upload_bytes"):
        create_app(model, max_upload_bytes=0)
    with pytest.raises(ValueError, match="colormap"):
        create_app(model, default_colormap="rainbow")
    with pytest.raises(ValueError, match="resolution"):
        create_app(model, default_resolution="huge")
    with pytest.raises(ValueError, match="Runner"):
        create_app(object())  # type: ignore[arg-type]
