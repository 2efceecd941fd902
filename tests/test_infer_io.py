"""Inference IO: PLY writer/reader, PyAV video streaming, input expansion, colour maps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth.data.inputs import expand_inputs, image_extensions, read_exif_focal_35mm
from anydepth.data.pointcloud import read_ply, write_ply
from anydepth.ops.colormap import (
    apply_colormap,
    colormap_lut,
    from_uint16,
    list_colormaps,
    normalize,
    robust_range,
    to_uint16,
)

# ------------------------------------------------------------------------------------------------ PLY


def test_ply_round_trip_with_colours_and_comments(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(257, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(257, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "c.ply", pts, cols, comments=["metric: NO", "units: nominal"])
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header")].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    assert "element vertex 257" in header and "property uchar red" in header
    assert len(raw) - (raw.index(b"end_header") + len(b"end_header\n")) == 257 * 15
    p2, c2, comments = read_ply(path)
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(c2, cols)
    assert comments == ["metric: NO", "units: nominal"]
    # no colours
    write_ply(tmp_path / "n.ply", pts[:3])
    p3, c3, _ = read_ply(tmp_path / "n.ply")
    assert c3 is None and p3.shape == (3, 3)


def test_ply_writer_refuses_overwrite_and_leaves_no_temp_files(tmp_path: Path) -> None:
    pts = np.zeros((2, 3), np.float32)
    write_ply(tmp_path / "a.ply", pts)
    before = (tmp_path / "a.ply").read_bytes()
    with pytest.raises(FileExistsError):
        write_ply(tmp_path / "a.ply", np.ones((5, 3), np.float32))
    assert (tmp_path / "a.ply").read_bytes() == before
    write_ply(tmp_path / "a.ply", np.ones((5, 3), np.float32), overwrite=True)
    assert read_ply(tmp_path / "a.ply")[0].shape == (5, 3)
    with pytest.raises(ValueError, match="colors"):
        write_ply(tmp_path / "b.ply", pts, np.zeros((2, 3), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]


def test_ply_reader_reads_ascii(tmp_path: Path) -> None:
    (tmp_path / "a.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n1 2 3\n4 5 6\n"
    )
    pts, cols, _ = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(pts, [[1, 2, 3], [4, 5, 6]])
    assert cols is None


# ------------------------------------------------------------------------------------------------ video


def _write_video(path: Path, n: int = 6, h: int = 32, w: int = 48, fps: Fraction = Fraction(15, 1)) -> None:
    from anydepth.data.video import VideoWriter

    with VideoWriter(path, fps) as vw:
        for i in range(n):
            f = np.zeros((h, w, 3), np.uint8)
            f[:, : (i + 1) * (w // n)] = 200
            vw.write(f)


def test_video_round_trip_streams_frames_and_keeps_fps(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from anydepth.data.video import iter_frames, probe_video

    _write_video(tmp_path / "v.mp4")
    info = probe_video(tmp_path / "v.mp4")
    assert info.fps == 15 and info.frames == 6 and info.display_size == (32, 48)
    frames = list(iter_frames(tmp_path / "v.mp4"))
    assert len(frames) == 6 and frames[0].shape == (32, 48, 3) and frames[0].dtype == np.uint8
    # content survives lossy coding: the bright band widens by 8 px per frame
    widths = [int((f[16, :, 0] > 100).sum()) for f in frames]
    assert widths == pytest.approx([8, 16, 24, 32, 40, 48], abs=2)
    assert len(list(iter_frames(tmp_path / "v.mp4", stride=2))) == 3
    assert len(list(iter_frames(tmp_path / "v.mp4", max_frames=4))) == 4


def test_video_writer_is_atomic_and_refuses_overwrite(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from anydepth.data.video import VideoWriter, iter_frames

    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "x.mp4", 10) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    _write_video(tmp_path / "x.mp4", n=2)
    with pytest.raises(FileExistsError):
        with VideoWriter(tmp_path / "x.mp4", 10) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
    assert len(list(iter_frames(tmp_path / "x.mp4"))) == 2
    # odd sizes are padded to even (H.264 4:2:0)
    with VideoWriter(tmp_path / "odd.mp4", 10) as vw:
        vw.write(np.zeros((15, 17, 3), np.uint8))
    assert next(iter(iter_frames(tmp_path / "odd.mp4"))).shape == (16, 18, 3)


def test_video_display_rotation_is_applied(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    from anydepth.data.video import iter_frames, probe_video

    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.set_display_rotation(90)  # display = stored frame rotated 90 degrees counter-clockwise
        for _ in range(2):
            f = np.zeros((32, 48, 3), np.uint8)
            f[:8, :8] = 255  # bright top-left corner in the stored frame
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    info = probe_video(path)
    assert info.rotation == 90 and info.display_size == (48, 32)
    frame = next(iter(iter_frames(path)))
    assert frame.shape == (48, 32, 3)
    assert frame[-4:, :4, 0].mean() > 200 and frame[:4, :4, 0].mean() < 50  # top-left went to bottom-left


def test_corrupt_video_raises_value_error(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from anydepth.data.video import probe_video

    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.mp4"):
        probe_video(tmp_path / "bad.mp4")


# ------------------------------------------------------------------------------------------------ inputs


def _touch_image(path: Path, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(path)


def test_expand_directory_recursive_mirrors_tree_and_natural_order(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["img10.png", "img2.png", "sub/deep/c.jpg", "sub/b.webp", ".hidden/x.png", "notes.txt"]:
        if rel.endswith(".txt"):
            (root / rel).write_text("ignored")
        else:
            _touch_image(root / rel)
    (root / "clip.mp4").write_bytes(b"")  # kind from the extension; decoded later
    items, errors = expand_inputs([root])
    assert errors == []
    assert [str(i.rel) for i in items] == ["clip", "img2", "img10", "sub/b", "sub/deep/c"]
    assert [i.kind for i in items] == ["video", "image", "image", "image", "image"]


def test_expand_globs_lists_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["a.png", "b.png", "sub/c.png", "sub/d.jpg"]:
        _touch_image(root / rel)
    items, errors = expand_inputs([str(root / "**" / "*.png")])
    assert [str(i.rel) for i in items] == ["a", "b", "sub/c"] and errors == []
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\n\nin/a.png\nin/sub\nmissing.png\n" + str(root / "b.png") + "\n")
    items, errors = expand_inputs([lst])
    assert [str(i.rel) for i in items] == ["in/a", "in/sub/c", "in/sub/d", "b"]
    assert len(errors) == 1 and errors[0].reason == "no such file or directory"
    assert errors[0].where.endswith("missing.png")
    items, errors = expand_inputs([str(tmp_path / "*.nothing"), tmp_path / "nope"])
    assert items == [] and [e.reason for e in errors] == [
        "glob pattern matches no image or video files",
        "no such file or directory",
    ]


def test_expand_collisions_duplicates_and_exclude(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch_image(root / "x.png")
    _touch_image(root / "x.jpg")
    _touch_image(root / "out" / "old_color.png")
    items, errors = expand_inputs([root, root / "x.png"], exclude=[root / "out"])
    assert [i.path.name for i in items] == ["x.jpg"]  # natural order: x.jpg first; x.png collides
    assert len(errors) == 1 and "already used" in errors[0].reason and errors[0].where.endswith("x.png")
    assert ".png" in image_extensions() and ".tif" in image_extensions() and ".mp4" not in image_extensions()


def test_read_exif_focal_35mm(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg", exif=exif)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.jpg")
    assert read_exif_focal_35mm(tmp_path / "a.jpg") == 28.0
    assert read_exif_focal_35mm(tmp_path / "b.jpg") is None
    assert read_exif_focal_35mm(tmp_path / "missing.jpg") is None


# ------------------------------------------------------------------------------------------------ colour maps


def test_colormap_luts_match_matplotlib() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    names = {"turbo": "turbo", "viridis": "viridis", "magma": "magma", "inferno": "inferno",
             "plasma": "plasma", "spectral": "Spectral", "gray": "gray", "spectral_r": "Spectral_r"}  # fmt: skip
    for ours, theirs in names.items():
        ref = matplotlib.colormaps[theirs](np.arange(256))[:, :3] * 255.0
        lut = colormap_lut(ours).astype(np.float64)
        assert lut.shape == (256, 3)
        assert np.abs(lut - ref).max() <= 3.0, ours
    assert set(list_colormaps()) >= {"turbo", "viridis", "magma", "inferno", "gray", "spectral"}


def test_colormap_endpoints_reverse_and_errors() -> None:
    gray = colormap_lut("gray")
    assert gray[0].tolist() == [0, 0, 0] and gray[-1].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(colormap_lut("viridis_r"), colormap_lut("viridis")[::-1])
    assert colormap_lut("turbo")[0].tolist() == [0x30, 0x12, 0x3B]
    with pytest.raises(KeyError, match="turbo"):
        colormap_lut("jet")


def test_apply_colormap_range_and_invalid() -> None:
    v = np.array([[0.0, 0.5, 1.0, np.nan, 2.0]])
    rgb = apply_colormap(v, "gray", vmin=0.0, vmax=1.0, invalid_color=(255, 0, 0))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 2].tolist() == [255, 255, 255]
    assert rgb[0, 1, 0] in (127, 128)
    assert rgb[0, 3].tolist() == [255, 0, 0]  # NaN -> invalid colour
    assert rgb[0, 4].tolist() == [255, 255, 255]  # clipped
    masked = apply_colormap(v, "gray", mask=np.array([[True, True, False, True, True]]))
    assert masked[0, 2].tolist() == [0, 0, 0]


def test_uint16_quantisation_round_trip_and_robust_range() -> None:
    rng = np.random.default_rng(0)
    v = rng.uniform(0.2, 3.0, size=(20, 30)).astype(np.float32)
    lo, hi = robust_range(v, 0.0, 100.0)
    assert (lo, hi) == (float(v.min()), float(v.max()))
    q = to_uint16(v, lo, hi)
    assert q.dtype == np.uint16 and q.min() == 0 and q.max() == 65535
    np.testing.assert_allclose(from_uint16(q, lo, hi), v, atol=(hi - lo) / 65535)
    assert robust_range(np.full((3, 3), 2.0))[1] > 2.0  # degenerate range widened
    assert robust_range(np.full((3, 3), np.nan)) == (0.0, 1.0)
    n = normalize(np.array([0.0, 5.0, 10.0, np.inf]), 0.0, 10.0)
    np.testing.assert_allclose(n[:3], [0.0, 0.5, 1.0])
    assert np.isnan(n[3])
