"""Reading image files into float32 planes in ``[0, 1]``: the file side of :mod:`stablesr.imageio`.

:func:`read_image` turns any file Pillow can open (PNG, JPEG, WebP, TIFF, BMP, ...) into a
:class:`LoadedImage`: an ``HxWx3`` RGB plane, an optional separate alpha plane, and what is needed to
write the result back faithfully (grey or colour, 8 or 16 bits, ICC profile). Every failure a user
can cause is an :class:`~stablesr.errors.InputImageError` with a one-line message naming the file.

16-bit colour images are read with OpenCV (``opencv-python-headless``, a core dependency): Pillow has
no multi-channel 16-bit modes and would silently drop the low byte.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from ..errors import InputImageError
from ..imaging.planes import GREY_16_MODES, pil_planes

__all__ = ["DEFAULT_MAX_PIXELS", "LoadedImage", "import_cv2", "read_image"]

#: Default pixel limit of :func:`read_image` (guards against decompression bombs).
DEFAULT_MAX_PIXELS = 200_000_000

_EXIF_ORIENTATION = 0x0112
_TIFF_BITS, _TIFF_PLANAR_CONFIG, _TIFF_ICC = 258, 284, 34675

_pillow_limit_lock = threading.Lock()


@dataclass
class LoadedImage:
    """A decoded image plus what is needed to write the result back like the source.

    Example:
        >>> img = read_image("photo.png")  # doctest: +SKIP
        >>> img.rgb.shape, img.rgb.dtype, img.alpha is None  # doctest: +SKIP
        ((256, 512, 3), dtype('float32'), True)
    """

    rgb: np.ndarray  # float32, HxWx3 in [0, 1]; grey sources are replicated to 3 channels
    alpha: np.ndarray | None  # float32, HxW in [0, 1], or None
    is_grey: bool  # the source had no colour: write the result back as grey
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None  # to embed in the output
    format: str  # Pillow format name of the source ("PNG", "JPEG", ...)
    path: Path | None = None


# --------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file into float32 planes in ``[0, 1]``, with EXIF orientation applied.

    Grey sources keep ``is_grey``; alpha (RGBA, LA, palette or tRNS transparency) is split off;
    16-bit PNG/TIFF keep 16-bit precision. Animated or multi-page files, files above
    ``max_pixels`` (``None``: no limit) and anything unreadable raise :class:`InputImageError`.

    Example:
        >>> img = read_image("children-alpha.png")  # doctest: +SKIP
        >>> img.rgb.shape, img.alpha.shape, img.bit_depth  # doctest: +SKIP
        ((350, 566, 3), (350, 566), 8)
    """
    p = Path(path)
    _check_regular_file(p)
    try:
        return _decode(p, max_pixels)
    except Image.DecompressionBombError:
        # Pillow's built-in guard (about 179 MP) ignores max_pixels. Retry with ours as the only
        # guard: _decode checks the size from the header before anything is decoded.
        with _pillow_limit_lifted():
            return _decode(p, max_pixels)


def _check_regular_file(p: Path) -> None:
    """Refuse missing, non-regular and empty files before any decoder sees them."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputImageError(p, "file not found") from None
    except OSError as exc:
        raise InputImageError(p, f"cannot access file ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputImageError(p, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise InputImageError(p, "not a regular file")
    if st.st_size == 0:
        raise InputImageError(p, "file is empty (0 bytes)")


def _decode(p: Path, max_pixels: int | None) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            # Our own limit decides; Pillow's DecompressionBombWarning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                return _decode_opened(p, im, max_pixels)
    except (InputImageError, Image.DecompressionBombError):
        raise
    except UnidentifiedImageError as exc:
        if _is_tiff(p):  # a layout Pillow does not know, e.g. 16-bit grey+alpha (which we write ourselves)
            return _decode_tiff(p, max_pixels)
        raise InputImageError(p, _reason_for(exc)) from exc
    except Exception as exc:  # Pillow's plugins raise a zoo of types for bad data
        raise InputImageError(p, _reason_for(exc)) from exc


def _decode_opened(p: Path, im: ImageFile.ImageFile, max_pixels: int | None) -> LoadedImage:
    width, height = im.size
    frames = getattr(im, "n_frames", 1)
    # MPO (most phone JPEGs) stores previews or depth maps as extra frames; the first is the photo.
    _check_size_and_frames(p, width, height, 1 if im.format == "MPO" else frames, max_pixels)

    fmt = im.format or "unknown"
    tags = getattr(im, "tag_v2", {}) if fmt == "TIFF" else {}
    if tags.get(_TIFF_PLANAR_CONFIG) == 2 and 16 in np.atleast_1d(tags.get(_TIFF_BITS, 8)):
        return _decode_tiff(p, max_pixels)  # Pillow reads 16-bit planes as 8-bit, with the samples mixed
    rawmode = _tile_rawmode(im)  # before load(), which clears the tiles
    # Decoding here also validates 16-bit files before OpenCV sees them: OpenCV only prints
    # warnings and returns None for truncated or corrupt data.
    im.load()
    icc = im.info.get("icc_profile") or None
    orientation = _exif_orientation(im)  # after load(): a PNG's eXIf chunk may follow the pixels

    if ";16" in rawmode and im.mode not in GREY_16_MODES:
        # 16-bit colour and/or alpha: Pillow kept only the high byte of each sample.
        values, alpha = _decode_16bit_cv2(p, im)
        is_grey, bit_depth = rawmode.startswith(("L", "I")), 16
    else:
        source: Image.Image = im
        if im.mode == "CMYK":
            source, icc = _cmyk_to_rgb(im, icc)
        values, alpha, is_grey, bit_depth = _pillow_planes(p, source)

    return _loaded(p, values, alpha, is_grey, bit_depth, icc, fmt, orientation)


def _check_size_and_frames(p: Path, width: int, height: int, frames: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise InputImageError(p, "image has zero width or height")
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            p,
            f"image is {width}x{height} ({width * height:,} pixels), above the limit of {max_pixels:,} "
            "pixels (possible decompression bomb); raise the limit (--max-pixels, max_pixels= in Python; "
            "0 = none) if the file is trusted",
        )
    if frames > 1:
        raise InputImageError(p, f"animated or multi-page image ({frames} frames) is not supported; save one frame")


def _loaded(p: Path, values: np.ndarray, alpha: np.ndarray | None, is_grey: bool, bit_depth: int,
            icc: bytes | None, fmt: str, orientation: int) -> LoadedImage:
    """The :class:`LoadedImage` of decoded planes, oriented upright."""
    values = _apply_orientation(values, orientation)
    if alpha is not None:
        alpha = _apply_orientation(alpha, orientation)
    if is_grey and values.ndim == 3:
        values = values[..., 0]
    rgb = np.repeat(values[..., None], 3, axis=2) if values.ndim == 2 else values
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
        is_grey=is_grey,
        bit_depth=bit_depth,
        icc_profile=icc,
        format=fmt,
        path=p,
    )


def _is_tiff(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF, BigTIFF


def _decode_tiff(p: Path, max_pixels: int | None) -> LoadedImage:
    """A grey, grey+alpha, RGB or RGBA TIFF of 8 or 16 bits that Pillow cannot open, read with tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            height, width = int(page.imagelength), int(page.imagewidth)
            _check_size_and_frames(p, width, height, len(tif.pages), max_pixels)
            photometric, samples = int(page.photometric), int(page.samplesperpixel)
            planar = int(page.planarconfig) == 2
            icc_tag, orientation_tag = page.tags.get(_TIFF_ICC), page.tags.get(_EXIF_ORIENTATION)
            icc = bytes(icc_tag.value) if icc_tag is not None else None
            orientation = int(orientation_tag.value) if orientation_tag is not None else 1
            data = page.asarray()
    except InputImageError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        if "imagecodecs" in str(exc):  # LZW, JPEG... in tifffile need that package
            raise InputImageError(p, "this TIFF's compression needs the imagecodecs package: pip install imagecodecs"
                                  ) from None
        raise InputImageError(p, _reason_for(exc)) from exc
    if samples > 1 and planar:  # stored plane after plane: (samples, H, W)
        data = np.moveaxis(data, 0, -1)
    grey = photometric == 1 and samples in (1, 2)  # BlackIsZero
    if not (grey or (photometric == 2 and samples in (3, 4))) or data.dtype not in (np.uint8, np.uint16):
        raise InputImageError(p, f"unsupported TIFF layout ({samples} samples, photometric {photometric}, "
                                 f"{data.dtype})")
    values = data.reshape(height, width, samples).astype(np.float32) / float(np.iinfo(data.dtype).max)
    colour = 1 if grey else 3
    alpha = values[..., colour] if samples > colour else None
    return _loaded(p, values[..., :colour], alpha, grey, 8 * data.dtype.itemsize, icc, "TIFF", orientation)


def _pillow_planes(p: Path, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool, int]:
    """:func:`~stablesr.imaging.convert.pil_planes`, with a mode it cannot convert reported for the file."""
    try:
        return pil_planes(im)
    except ValueError:
        raise InputImageError(p, f"unsupported colour mode {im.mode!r}") from None


def _decode_16bit_cv2(p: Path, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a 16-bit colour/alpha PNG or TIFF with OpenCV; returns (RGB HxWx3, alpha or None)."""
    cv2 = import_cv2()
    if cv2 is None:
        raise InputImageError(
            p, "16-bit colour image needs OpenCV to keep its precision: pip install opencv-python-headless"
        )
    data = cv2.imdecode(np.fromfile(p, dtype=np.uint8), cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF rotation
    if data is None or data.shape[:2] != (im.height, im.width):
        raise InputImageError(p, "image data is corrupt or cannot be decoded")
    scale = float(np.iinfo(data.dtype).max) if data.dtype.kind in "ui" else 1.0
    values = np.clip(data.astype(np.float32) / scale, 0, 1)
    if values.ndim == 2:
        return np.repeat(values[..., None], 3, axis=2), None
    if values.shape[2] == 3:
        return values[..., ::-1], None  # OpenCV is BGR
    if values.shape[2] == 4:
        return values[..., 2::-1], values[..., 3]  # BGRA -> RGB + alpha
    raise InputImageError(p, f"unsupported channel count {values.shape[2]}")


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert CMYK to RGB, through its ICC profile when it has one.

    The result is sRGB, so the CMYK profile must not be carried to the (RGB) output.
    """
    if icc:
        with suppress(Exception):  # an unusable profile falls back to the plain formula below
            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            converted = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted, None
    return im.convert("RGB"), None


def _tile_rawmode(im: ImageFile.ImageFile) -> str:
    """The decoder's raw mode (e.g. ``"RGBA;16B"``), which reveals 16-bit samples Pillow will truncate."""
    if not im.tile:
        return ""
    args = im.tile[0][3]  # (codec, extents, offset, args); PNG: rawmode, libtiff: (rawmode, ...)
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return ""


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent or unreadable (broken EXIF must not reject a photo)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF is common in the wild; ignore it, keep the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an HxW[xC] array like ``PIL.ImageOps.exif_transpose`` does for that orientation.

    Done on arrays so the Pillow and OpenCV paths share it.
    """
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, k=-1)
    if orientation == 7:
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, k=1)
    return a


def _reason_for(exc: BaseException) -> str:
    """A short, stable reason for a decoder exception (never the library's raw text)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image file (unsupported format, or not an image)"
    if isinstance(exc, FileNotFoundError):  # removed between our check and the decoder's open
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return "file is truncated (incomplete download or copy?)"
    return "image data is corrupt or cannot be decoded"


@contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    """Switch off Pillow's global pixel guard for one read; the lock keeps our readers from racing."""
    with _pillow_limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def import_cv2() -> Any:
    """OpenCV, or None when it is not installed (it is an optional dependency)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2
