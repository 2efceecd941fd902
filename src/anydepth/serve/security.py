"""Request screening for the HTTP service: Host allow-list, same-origin check, bearer token, security headers,
and validation of uploads (size limits while streaming, in-memory multipart parsing, safe image decoding).

**Middleware.** ``SecurityMiddleware`` is a plain ASGI middleware placed in front of every route (pages, static
files, the API, ``/openapi.json`` and unknown paths alike), so a request that fails a check is answered before
any route code runs or any request body is read. Checks, in order:

1. **Host allow-list** (``allowed_hosts``): the ``Host`` header must name one of the allowed hosts (by default
   the loopback names). This defeats DNS-rebinding attacks, where a web page on an attacker's domain that
   resolves to 127.0.0.1 would otherwise read the local service's answers. 400 otherwise.
2. **Same origin for state-changing methods**: a ``POST`` (any method except GET/HEAD/OPTIONS) that carries an
   ``Origin`` header must come from the service's own origin. Browsers send ``Origin`` on cross-site form posts
   and ``fetch`` calls, so another web site cannot make the browser run (and queue) predictions. 403 otherwise.
3. **Bearer token** (when ``token`` is set): ``Authorization: Bearer <token>`` or the session cookie. The page
   is opened once as ``/?token=<token>``: the service answers with a redirect to ``/`` that sets an HttpOnly,
   SameSite=Strict cookie holding a hash of the token (never the token itself), so the page's own requests are
   authenticated and the token leaves the address bar. Comparisons are constant-time
   (``hmac.compare_digest`` of SHA-256 digests, so neither content nor length leaks). 401 otherwise.

Every response gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
no-referrer``, ``Cross-Origin-Opener-Policy``/``-Resource-Policy: same-origin`` and the given
Content-Security-Policy; API answers also get ``Cache-Control: no-store``.

**Uploads.** ``read_form`` streams a ``multipart/form-data`` body into memory through python-multipart's push
parser: the declared ``Content-Length`` and then the bytes actually received are checked against the limit as
they arrive (413 as soon as it is exceeded; the rest is never read), text fields are capped at 1 KiB, parts at
16; nothing is written to disk and the client's file name is never used. ``decode_image`` identifies the bytes
with an allow-list of Pillow decoders (JPEG, PNG, WebP, BMP, TIFF, GIF; 415 for other recognised formats such as
HEIC, PDF, SVG, PSD; 400 for anything else), refuses images whose *declared* size exceeds ``max_pixels`` before
decoding any pixel (decompression bombs, 413; Pillow's global ``MAX_IMAGE_PIXELS`` is left alone), and turns
truncated or corrupt data into 400.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from anydepth.atomic import json_text
from anydepth.data.io import pil_to_rgb

__all__ = [
    "LOOPBACK_HOSTS",
    "TOKEN_COOKIE",
    "SecurityMiddleware",
    "token_matches",
    "cookie_value",
    "host_of",
    "ApiError",
    "UploadPart",
    "UploadForm",
    "read_form",
    "DecodedImage",
    "decode_image",
    "ACCEPTED_IMAGE_FORMATS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_PIXELS",
]

log = logging.getLogger(__name__)

#: Host names accepted by default: the loopback addresses the service binds to by default.
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
#: Name of the session cookie set after ``/?token=...``.
TOKEN_COOKIE = "anydepth_session"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _digest(s: str) -> bytes:
    return hashlib.sha256(s.encode("utf-8", "surrogatepass")).digest()


def token_matches(candidate: str | None, token: str) -> bool:
    """Constant-time comparison of a presented credential with the configured token.

    Both sides are hashed first, so the comparison time depends on neither the content nor the length.
    """
    if candidate is None:
        return False
    return hmac.compare_digest(_digest(candidate), _digest(token))


def cookie_value(token: str) -> str:
    """The session cookie value for ``token``: a hex SHA-256 of a domain-separated string (not the token)."""
    return hashlib.sha256(b"anydepth-session-cookie\0" + token.encode("utf-8", "surrogatepass")).hexdigest()


def host_of(host_header: str) -> str:
    """The host part of a ``Host`` header value, lower case, without port or IPv6 brackets.

    ``"127.0.0.1:8000"`` -> ``"127.0.0.1"``, ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost"`` -> ``"localhost"``.
    """
    h = host_header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip().strip('"')
    return None


def _bearer(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if not auth:
        return None
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class SecurityMiddleware:
    """ASGI middleware enforcing the checks in the module docstring on every HTTP request.

    Args:
        app: the wrapped ASGI application.
        token: required bearer token, or None for no authentication.
        allowed_hosts: accepted ``Host`` names (compared without port, case-insensitive); None accepts any.
        content_security_policy: value of the ``Content-Security-Policy`` header (None: not sent).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
        content_security_policy: str | None = None,
    ) -> None:
        if token is not None and not token.strip():
            raise ValueError("token must be a non-empty string (or None for no authentication)")
        self.app = app
        self.token = token
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(host_of(h) for h in allowed_hosts if h.strip())
        )
        self.csp = content_security_policy
        self._cookie = cookie_value(token) if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denied = self._screen(scope)
        if denied is not None:
            status, message, extra = denied
            await self._reply(send, scope, status, message, extra)
            return
        if self.token is not None and self._is_login(scope):
            await self._login_redirect(send, scope)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += self._security_headers(scope)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    # ---------------------------------------------------------------------------------------------------------

    def _screen(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host_header = _header(scope, b"host") or ""
        if self.allowed_hosts is not None and host_of(host_header) not in self.allowed_hosts:
            log.warning(
                "rejected request with Host %r (allowed: %s)", host_header, sorted(self.allowed_hosts)
            )
            return (
                400,
                "invalid Host header; the service only answers requests addressed to "
                + ", ".join(sorted(self.allowed_hosts)),
                [],
            )
        if scope.get("method", "GET") not in _SAFE_METHODS:
            origin = _header(scope, b"origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host_header.strip().lower():
                log.warning("rejected cross-origin %s from Origin %r", scope.get("method"), origin)
                return 403, "cross-origin request refused (Origin does not match the service)", []
        if self.token is not None and not self._authenticated(scope) and not self._is_login(scope):
            return (
                401,
                "authentication required: send 'Authorization: Bearer <token>' "
                "(or open the page once as /?token=<token>)",
                [(b"www-authenticate", b'Bearer realm="anydepth"')],
            )
        return None

    def _authenticated(self, scope: Scope) -> bool:
        assert self.token is not None and self._cookie is not None
        if token_matches(_bearer(scope), self.token):
            return True
        return token_matches(_cookie(scope, TOKEN_COOKIE), self._cookie)

    def _is_login(self, scope: Scope) -> bool:
        """``GET /?token=<valid token>`` (the page URL the CLI prints)."""
        if self.token is None or scope.get("method") not in ("GET", "HEAD") or scope.get("path") != "/":
            return False
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = qs.get("token", [])
        return len(values) == 1 and token_matches(values[0], self.token)

    def _security_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        h = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if self.csp:
            h.append((b"content-security-policy", self.csp.encode("latin-1")))
        if str(scope.get("path", "")).startswith("/v1/"):
            h.append((b"cache-control", b"no-store"))
        return h

    async def _login_redirect(self, send: Send, scope: Scope) -> None:
        assert self._cookie is not None
        location = (scope.get("root_path") or "") + "/"
        cookie = f"{TOKEN_COOKIE}={self._cookie}; Path=/; HttpOnly; SameSite=Strict"
        headers = [
            (b"location", location.encode("latin-1")),
            (b"set-cookie", cookie.encode("latin-1")),
            (b"content-length", b"0"),
            *self._security_headers(scope),
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _reply(
        self, send: Send, scope: Scope, status: int, message: str, extra: list[tuple[bytes, bytes]]
    ) -> None:
        body = json_text({"detail": message, "status": status}).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            *extra,
            *self._security_headers(scope),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})


# --------------------------------------------------------------------------------------------------------------
# Upload validation: limits and image decoding
# --------------------------------------------------------------------------------------------------------------

#: Upload size limit (bytes of the image file) by default: 20 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Decoded image size limit by default: 50 megapixels (a 48 MP phone photo passes; ~150 MB of RGB).
DEFAULT_MAX_PIXELS = 50_000_000
#: Pillow decoders tried on uploads (the JPEG decoder also opens the multi-picture "MPO" JPEGs of phones).
ACCEPTED_IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Bytes allowed in a multipart body beyond the image (boundaries, part headers, text fields).
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_TEXT_FIELD_BYTES = 1024
MAX_PARTS = 16

# Magic bytes of image formats that are recognised but not accepted (clearer 415 than "not an image").
_KNOWN_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"qoif", "QOI"),
    (0, b"\x76\x2f\x31\x01", "OpenEXR"),
    (0, b"#?RADIANCE", "Radiance HDR"),
    (0, b"DDS ", "DDS"),
)


class ApiError(Exception):
    """A client-visible error: HTTP ``status`` and a message (answered as ``{"detail": ..., "status": ...}``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------------------------------------------
# Multipart upload, parsed in memory
# --------------------------------------------------------------------------------------------------------------


@dataclass
class UploadPart:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class UploadForm:
    fields: dict[str, str]
    image: UploadPart | None


async def read_form(request: Any, *, max_file_bytes: int, file_field: str = "image") -> UploadForm:
    """Stream a ``multipart/form-data`` body into memory, enforcing size limits as bytes arrive.

    Raises:
        ApiError: 415 (not multipart), 413 (body or file over the limit), 400 (malformed body or fields).
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype = request.headers.get("content-type", "")
    mime, params = parse_options_header(ctype)
    if mime != b"multipart/form-data":
        raise ApiError(
            415,
            f"expected a multipart/form-data body with the image in the file field {file_field!r}; "
            f"got Content-Type {ctype or '(none)'!r}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data body without a boundary parameter")
    max_body = max_file_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n_declared = int(declared)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {declared!r}") from None
        if n_declared > max_body:
            raise ApiError(413, _too_large_message(max_file_bytes, f"{n_declared} bytes declared"))

    parts: list[UploadPart] = []
    header_field = bytearray()
    header_value = bytearray()
    ended = False

    def current() -> UploadPart:
        return parts[-1]

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise ApiError(400, f"too many form fields (at most {MAX_PARTS})")
        parts.append(UploadPart())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current().headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        p = current()
        disp, dparams = parse_options_header(p.headers.get("content-disposition", ""))
        if disp != b"form-data" or b"name" not in dparams:
            raise ApiError(
                400, "malformed multipart part: missing 'Content-Disposition: form-data; name=...'"
            )
        p.name = dparams[b"name"].decode("utf-8", "replace")
        if b"filename" in dparams:
            p.filename = dparams[b"filename"].decode("utf-8", "replace")
        if "content-type" in p.headers:
            p.content_type = p.headers["content-type"].strip().lower()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        p = current()
        p.data.extend(data[start:end])
        if p.name == file_field:
            if len(p.data) > max_file_bytes:
                raise ApiError(413, _too_large_message(max_file_bytes, "more bytes received"))
        elif p.filename is not None:  # a file under another name: say which field the image belongs in
            raise ApiError(
                400,
                f"missing field {file_field!r}: the file was sent in the field {p.name!r}; send the image file "
                f"in the multipart field {file_field!r}",
            )
        elif len(p.data) > MAX_TEXT_FIELD_BYTES:
            raise ApiError(400, f"form field {p.name!r} is too long (at most {MAX_TEXT_FIELD_BYTES} bytes)")

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise ApiError(413, _too_large_message(max_file_bytes, f"over {max_body} bytes received"))
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # python_multipart.exceptions.MultipartParseError and friends
        raise ApiError(400, f"malformed multipart/form-data body: {e}") from None
    if not ended:
        raise ApiError(400, "incomplete multipart/form-data body (closing boundary missing)")
    fields: dict[str, str] = {}
    image: UploadPart | None = None
    for p in parts:
        if p.name == file_field:
            if image is not None:
                raise ApiError(400, f"more than one {file_field!r} file in the form")
            image = p
            continue
        if p.name in fields:
            raise ApiError(400, f"form field {p.name!r} given twice")
        try:
            fields[str(p.name)] = bytes(p.data).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"form field {p.name!r} is not valid UTF-8 text") from None
    return UploadForm(fields, image)


def _too_large_message(limit: int, what: str) -> str:
    return f"upload too large ({what}); the image file may be at most {limit} bytes ({limit / 2**20:.1f} MiB)"


# --------------------------------------------------------------------------------------------------------------
# Image decoding with validation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class DecodedImage:
    """A validated, decoded upload.

    Attributes:
        rgb: uint8 ``[H,W,3]`` RGB, EXIF orientation applied.
        format: the Pillow format name (``"PNG"``, ``"JPEG"``, ...).
        focal_35mm: EXIF ``FocalLengthIn35mmFilm`` (mm) or None.
        source_hw: ``(H, W)`` of the uploaded image (EXIF orientation applied).
        reduction: integer factor the image was decoded at (1: full size; see ``decode_image``'s ``target``).
    """

    rgb: np.ndarray
    format: str
    focal_35mm: float | None
    source_hw: tuple[int, int] = (0, 0)
    reduction: int = 1


def _sniff_unsupported(data: bytes) -> str | None:
    for offset, magic, name in _KNOWN_UNSUPPORTED:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:1] == b"P" and data[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6") and data[2:3].isspace():
        return "PBM/PGM/PPM"
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _exif_focal_35mm(im: Any) -> float | None:
    try:
        exif = im.getexif()
        value = exif.get_ifd(0x8769).get(0xA405) or exif.get(0xA405)
        f = float(value) if value is not None else 0.0
    except Exception:  # corrupt EXIF is not an error: the focal length is optional
        return None
    return f if math.isfinite(f) and f > 0 else None


#: EXIF orientation -> the ``PIL.Image.Transpose`` method that shows the image upright (as ImageOps.exif_transpose)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
) -> DecodedImage:
    """Identify, check and decode an uploaded image held in memory.

    The format is identified from the bytes with Pillow, restricted to ``ACCEPTED_IMAGE_FORMATS``. The size
    declared in the header is checked against ``max_pixels`` before any pixel data is decoded, so a
    decompression bomb (a small file declaring a huge raster) is refused without allocating it. Pillow's global
    ``Image.MAX_IMAGE_PIXELS`` is left untouched.

    Memory: with ``target``, an image at least twice the processing size on both sides is decoded at an integer
    reduction ``f`` that keeps it at least the processing size (JPEG: the decoder's DCT scaling, so the full
    raster is never allocated; other formats: the 8-bit raster is decoded, then box-reduced at once), so
    everything after decoding (float conversion, inference, answers) scales with the processing size, not the
    upload's pixel count. The peak of one request is about the 8-bit raster (``H*W*channels`` bytes, bounded by
    ``max_pixels``) plus ``O(processing size)``.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted ``H * W``.
        target: ``(H, W) -> (H', W')``, the processing size of an upright image of size ``(H, W)``; None decodes at
            full size.

    Returns:
        ``DecodedImage`` with uint8 ``[H,W,3]`` RGB (grayscale expanded, alpha dropped, 16-bit scaled to 8-bit).

    Raises:
        ApiError: 400 (empty, not an image, truncated or corrupt), 413 (too many pixels), 415 (a recognised but
            unsupported format).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ApiError(400, "the uploaded file is empty")
    accepted = ", ".join(ACCEPTED_IMAGE_FORMATS)
    try:
        im = Image.open(io.BytesIO(data), formats=list(ACCEPTED_IMAGE_FORMATS))
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image too large: {e}") from None
    except UnidentifiedImageError:
        other = _sniff_unsupported(data)
        if other is not None:
            raise ApiError(415, f"unsupported image format {other}; accepted formats: {accepted}") from None
        raise ApiError(
            400, f"the uploaded file is not a readable image (accepted formats: {accepted})"
        ) from None
    except Exception as e:  # malformed headers raise assorted errors inside Pillow's plugins
        raise ApiError(400, f"cannot read image header: {type(e).__name__}: {e}") from None
    with im:
        fmt = str(im.format)
        w, h = (int(v) for v in im.size)
        if w < 1 or h < 1:
            raise ApiError(400, f"image has an empty size {w}x{h}")
        if w * h > max_pixels:
            raise ApiError(
                413, f"image too large: {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels"
            )
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # a broken EXIF block: keep the stored orientation
            orientation = 1
        swap = orientation in (5, 6, 7, 8)
        need = None
        if target is not None:
            ph, pw = target((w, h) if swap else (h, w))
            need = (pw, ph) if swap else (ph, pw)  # the processing size in stored orientation
            f = min(h // max(need[0], 1), w // max(need[1], 1))
            if fmt == "JPEG" and f >= 2:
                im.draft(None, (w // f, h // f))  # DCT scaling: decodes at 1/2, 1/4 or 1/8 directly
        try:
            im.load()
        except Exception as e:  # truncated data: OSError; corrupt streams: OSError/SyntaxError/ValueError
            raise ApiError(400, f"cannot decode {fmt} image (truncated or corrupt): {e}") from None
        focal = _exif_focal_35mm(im)
        up: Any = im
        reduction = 1
        if need is not None:
            f = min(im.height // max(need[0], 1), im.width // max(need[1], 1))
            if f >= 2:
                up = _reduce(im, f)
            reduction = max(1, round(h / up.height))
        try:
            if up is im:
                up = ImageOps.exif_transpose(im)
            elif orientation in _ORIENTATION:
                up = up.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
        except Exception:  # a broken orientation tag: keep the stored orientation
            pass
        try:
            rgb = pil_to_rgb(up)
        except Exception as e:
            raise ApiError(400, f"cannot convert {fmt} image (mode {up.mode}) to RGB: {e}") from None
    return DecodedImage(
        rgb=rgb, format=fmt, focal_35mm=focal, source_hw=(w, h) if swap else (h, w), reduction=reduction
    )


def _reduce(im: Any, f: int) -> Any:
    """``im`` box-reduced by the integer factor ``f`` (modes Pillow cannot reduce are converted first)."""
    try:
        return im.reduce(f)
    except ValueError:
        if im.mode.startswith("I;16"):
            return im.convert("I").reduce(f)
        alpha = im.mode in ("PA", "LA") or "transparency" in im.info
        return im.convert("RGBA" if alpha else "RGB").reduce(f)
