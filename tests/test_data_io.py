"""Depth-format IO: PFM, OpenEXR, HDF5, NPY, PNG16 and the ``read_depth`` dispatcher, on files in the true format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from anydepth.data import io


def test_pfm_rows_are_stored_bottom_to_top(tmp_path):
    # Hand-written little-endian greyscale PFM: the first stored row is the BOTTOM image row.
    p = tmp_path / "d.pfm"
    raster = struct.pack("<6f", 4.0, 5.0, 6.0, 1.0, 2.0, 3.0)  # bottom row 4 5 6, then top row 1 2 3
    p.write_bytes(b"Pf\n3 2\n-1.0\n" + raster)
    np.testing.assert_array_equal(io.read_pfm(p), [[1, 2, 3], [4, 5, 6]])


def test_pfm_big_endian_and_colour(tmp_path):
    p = tmp_path / "c.pfm"
    vals = np.arange(12, dtype=">f4")  # 2x2x3, bottom row first
    p.write_bytes(b"PF\n2 2\n1.0\n" + vals.tobytes())
    out = io.read_pfm(p)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 0], [0, 1, 2])  # first stored pixel = bottom-left
    np.testing.assert_array_equal(out[0, 1], [9, 10, 11])


def test_pfm_round_trip(tmp_path):
    a = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    io.write_pfm(tmp_path / "x.pfm", a)
    np.testing.assert_array_equal(io.read_pfm(tmp_path / "x.pfm"), a)
    c = np.random.default_rng(1).random((3, 4, 3)).astype(np.float32)
    io.write_pfm(tmp_path / "c.pfm", c)
    np.testing.assert_array_equal(io.read_pfm(tmp_path / "c.pfm"), c)
    with pytest.raises(FileExistsError):
        io.write_pfm(tmp_path / "x.pfm", a)


def test_pfm_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"P6\n3 2\n255\n" + bytes(18))
    with pytest.raises(ValueError, match="bad.pfm"):
        io.read_pfm(bad)
    short = tmp_path / "short.pfm"
    short.write_bytes(b"Pf\n3 2\n-1.0\n" + bytes(8))
    with pytest.raises(ValueError, match="short.pfm.*truncated"):
        io.read_pfm(short)
    with pytest.raises(FileNotFoundError, match="missing.pfm"):
        io.read_pfm(tmp_path / "missing.pfm")


def _write_exr(path, channels):
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def test_exr_single_and_rgb_channels(tmp_path):
    pytest.importorskip("OpenEXR")
    a = np.array([[1.5, 2.0], [0.0, -1.0]], dtype=np.float32)
    _write_exr(tmp_path / "y.exr", {"Y": a})
    np.testing.assert_array_equal(io.read_exr(tmp_path / "y.exr"), a)
    _write_exr(tmp_path / "rgb.exr", {"R": a, "G": a * 2, "B": a * 3})
    np.testing.assert_array_equal(io.read_exr(tmp_path / "rgb.exr"), a)  # R by default
    np.testing.assert_array_equal(io.read_exr(tmp_path / "rgb.exr", channel="B"), a * 3)
    _write_exr(tmp_path / "h.exr", {"Z": a.astype(np.float16)})
    out = io.read_exr(tmp_path / "h.exr")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a)
    with pytest.raises(KeyError, match="'Q'"):
        io.read_exr(tmp_path / "rgb.exr", channel="Q")


def test_exr_corrupt_names_the_file(tmp_path):
    pytest.importorskip("OpenEXR")
    p = tmp_path / "broken.exr"
    p.write_bytes(b"not an exr file at all")
    with pytest.raises(ValueError, match="broken.exr"):
        io.read_exr(p)


def test_hdf5_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    a = np.array([[1.0, np.nan], [3.25, 4.0]], dtype=np.float16)
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f.create_dataset("dataset", data=a, compression="gzip")
    out = io.read_hdf5_dataset(tmp_path / "d.hdf5")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, a)
    d = io.read_depth(tmp_path / "d.hdf5")
    assert d.dtype == np.float32 and np.isnan(d[0, 1]) and d[1, 0] == 3.25
    with pytest.raises(KeyError, match="nope.*dataset"):
        io.read_hdf5_dataset(tmp_path / "d.hdf5", "nope")
    (tmp_path / "bad.h5").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.h5"):
        io.read_hdf5_dataset(tmp_path / "bad.h5")


def test_npy_refuses_pickles_and_squeezes(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        io.read_npy(tmp_path / "obj.npy")
    np.save(tmp_path / "d.npy", np.ones((3, 4, 1), np.float64))
    d = io.read_depth(tmp_path / "d.npy")
    assert d.shape == (3, 4) and d.dtype == np.float32
    np.save(tmp_path / "rgb.npy", np.ones((3, 4, 3)))
    with pytest.raises(ValueError, match="single-channel"):
        io.read_depth(tmp_path / "rgb.npy")


def test_read_depth_png_needs_scale(tmp_path):
    raw = np.array([[0, 1000], [65535, 2500]], dtype=np.uint16)
    io.write_png16(tmp_path / "d.png", raw)
    with pytest.raises(ValueError, match="scale"):
        io.read_depth(tmp_path / "d.png")
    np.testing.assert_allclose(io.read_depth(tmp_path / "d.png", scale=1000.0), [[0, 1], [65.535, 2.5]])
    with pytest.raises(ValueError, match="extension"):
        io.read_depth(tmp_path / "d.tiff")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="corrupt.png"):
        io.read_depth(tmp_path / "corrupt.png", scale=1.0)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        io.read_depth(tmp_path / "absent.png", scale=1.0)
