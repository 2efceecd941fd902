"""Colour maps as pure numpy lookup tables (no matplotlib at run time), and value normalisation helpers.

The tables are embedded as control points and expanded to 256 entries by linear interpolation:

* ``turbo`` (Google, Apache-2.0), ``viridis``, ``magma``, ``inferno``, ``plasma`` (matplotlib's perceptually
  uniform maps, CC0): 52 control points each, the entries 0, 5, 10, ..., 255 of the 256-entry tables; the
  interpolated tables are within about 2/255 of matplotlib's.
* ``spectral``: the 11 ColorBrewer "Spectral" colours (Cynthia Brewer, Apache-2.0), spaced evenly, which is how
  matplotlib defines ``Spectral`` (so the table matches it to rounding).
* ``gray``: black to white.

Every map also exists reversed with the suffix ``_r`` (``spectral_r`` is the Depth-Anything look). Depth maps
are coloured by *nearness* in the CLI (disparity), so warm colours are near with ``turbo`` and ``spectral_r``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "list_colormaps",
    "colormap_lut",
    "apply_colormap",
    "robust_range",
    "normalize",
    "to_uint16",
    "from_uint16",
]

# fmt: off
_CONTROL_HEX: dict[str, str] = {
    "turbo": (
        "30123b36215f3b2f803f3e9c424bb54559cb4666dd4773eb4680f6458cfd4099ff38a5fb2fb2f427bee91fc9dd1ad4d0"
        "18ddc21ae4b622ebaa2ff19b3ff68a52fa7a65fd6979fe598bff4b9cfe40a9fb39b7f735c3f134d0ea34dbe236e5d938"
        "eecf3af5c53afaba39fdae35fea130fe932afc8423f9751df46617ef5811e84b0ce14109d83706ce2d04c32503b71d02"
        "a916019b0f018b09027a0403"
    ),
    "viridis": (
        "44015446085c471063481769481d6f482475472a7a46307e453781433d844142873f48893d4e8a3a538b38598c355e8d"
        "33638d31688e2e6d8e2c718e2a768e297b8e27808e25848e23898e218e8d20928c1f978b1e9c891fa18821a58524aa83"
        "28ae802eb37c35b7793dbc7446c06f50c46a5ac86465cb5e70cf577cd25089d54895d840a2da37b0dd2fbddf26cae11f"
        "d8e219e5e419f1e51dfde725"
    ),
    "magma": (
        "00000402020b0504160907200e0b2b140e361a104221114e29115a311165390f6e420f754a107952137c5a167e621980"
        "6a1c81721f81792282812581892881912b81992d80a1307eaa337db2357bba3878c23b75ca3e72d2426fd9466be04c67"
        "e75263ec5860f1605df4695cf7725cf97b5dfb8560fc8e64fd9869fea16efeaa74feb47bfebd82fec68afecf92fed89a"
        "fde2a3fdebacfcf4b6fcfdbf"
    ),
    "inferno": (
        "00000402020c0504170a072210092d160b391e0c45260c512f0a5b380962400a67490b6a510e6c59106e61136e69166e"
        "71196e781c6d801f6c88226a902568982766a02a63a82e5fb0315bb73557bf3952c63d4dcc4248d34743d94d3ddf5337"
        "e45a31e9612bed6925f1711ff47918f78212f98b0bfa9407fb9d07fca60cfcb014fbba1ffac42af8cd37f6d746f4e156"
        "f2ea69f2f27df5f992fcffa4"
    ),
    "plasma": (
        "0d08871b068d2605912f059638049a41049d4903a05102a35901a56100a76900a87100a87801a88004a88707a68e0ca4"
        "9511a19c179ea21d9aa82296ae2892b42e8dba3388bf3984c43e7fc9447acd4a76d24f71d6556dda5b69de6164e26660"
        "e66c5ce97257ed7953f07f4ff3854bf58c46f79342f99a3efba139fca835fdaf31feb72dfebe2afdc627fcce25fbd724"
        "f8df25f6e826f3f027f0f921"
    ),
    "spectral": "9e0142d53e4ff46d43fdae61fee08bffffbfe6f598abdda466c2a53288bd5e4fa2",
    "gray": "000000ffffff",
}
# fmt: on


def list_colormaps() -> list[str]:
    """Names accepted by ``colormap_lut``/``apply_colormap`` (each also with a ``_r`` suffix)."""
    return sorted(_CONTROL_HEX)


def _control_points(name: str) -> np.ndarray:
    s = _CONTROL_HEX[name]
    return np.array(
        [[int(s[i + k : i + k + 2], 16) for k in (0, 2, 4)] for i in range(0, len(s), 6)], np.float64
    )


@lru_cache(maxsize=64)
def _lut(name: str, n: int) -> np.ndarray:
    base, rev = (name[:-2], True) if name.endswith("_r") else (name, False)
    if base not in _CONTROL_HEX:
        raise KeyError(
            f"unknown colour map {name!r}; choices: {', '.join(list_colormaps())} (each also with _r)"
        )
    cp = _control_points(base)
    xs = np.linspace(0.0, 1.0, len(cp))
    t = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(t, xs, cp[:, c]) for c in range(3)], axis=1)
    lut = np.clip(np.round(lut), 0, 255).astype(np.uint8)
    if rev:
        lut = lut[::-1].copy()
    lut.setflags(write=False)
    return lut


def colormap_lut(name: str = "turbo", n: int = 256) -> np.ndarray:
    """The colour map ``name`` as a read-only uint8 ``[n, 3]`` RGB table (entry 0 = value 0, entry n-1 = 1).

    Raises:
        KeyError: unknown name (the message lists the choices).
    """
    if n < 2:
        raise ValueError(f"a colour map needs at least 2 entries, got n={n}")
    return _lut(name.lower(), int(n))


def robust_range(
    values: np.ndarray, low: float = 1.0, high: float = 99.0, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentiles ``(low, high)`` of the finite (and masked-in) values, as a display range.

    Returns ``(0.0, 1.0)`` when there is no valid value, and widens a degenerate range (constant map) to a
    non-empty one so that normalising never divides by zero.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    if not ok.any():
        return 0.0, 1.0
    if low <= 0.0 and high >= 100.0:
        lo, hi = float(v[ok].min()), float(v[ok].max())
    else:
        lo, hi = (float(x) for x in np.percentile(v[ok], [low, high]))
    if not hi > lo:
        eps = max(abs(lo), 1.0) * 1e-6
        lo, hi = lo - eps, hi + eps
    return lo, hi


def normalize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map ``[vmin, vmax]`` linearly to ``[0, 1]`` (clipped), float32; non-finite values stay NaN."""
    if not vmax > vmin:
        raise ValueError(f"normalize needs vmax > vmin, got vmin={vmin}, vmax={vmax}")
    v = np.asarray(values, dtype=np.float64)
    out = np.clip((v - vmin) / (vmax - vmin), 0.0, 1.0)
    out[~np.isfinite(v)] = np.nan
    return out.astype(np.float32)


def apply_colormap(
    values: np.ndarray,
    name: str = "turbo",
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    mask: np.ndarray | None = None,
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Colour a scalar map.

    Args:
        values: ``[H, W]`` (or any shape) scalar values.
        name: colour map name (see ``list_colormaps``; ``_r`` reverses).
        vmin, vmax: display range; each defaults to the min/max of the valid values.
        mask: optional bool array, False marks invalid pixels.
        invalid_color: RGB for non-finite or masked-out values.

    Returns:
        uint8 ``[..., 3]`` RGB image.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    if vmin is None or vmax is None:
        lo, hi = robust_range(v, 0.0, 100.0, mask=ok)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if not vmax > vmin:
        vmax = vmin + max(abs(vmin), 1.0) * 1e-6
    lut = colormap_lut(name)
    t = np.clip((np.where(ok, v, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    idx = np.round(t * (len(lut) - 1)).astype(np.intp)
    out = lut[idx]
    out[~ok] = np.asarray(invalid_color, dtype=np.uint8)
    return out


def to_uint16(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Quantise ``[vmin, vmax]`` to uint16 ``[0, 65535]`` (clipped); non-finite values become 0.

    The inverse is ``from_uint16(q, vmin, vmax)``; the quantisation step is ``(vmax - vmin) / 65535``.
    """
    n = normalize(values, vmin, vmax).astype(np.float64)
    q = np.round(np.nan_to_num(n, nan=0.0) * 65535.0)
    return q.astype(np.uint16)


def from_uint16(q: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Undo ``to_uint16``: float32 values ``vmin + q / 65535 * (vmax - vmin)``."""
    return (vmin + np.asarray(q, np.float64) / 65535.0 * (vmax - vmin)).astype(np.float32)
