"""Reading and writing image files: the only module in the package that knows about file formats.

Everything else works on float32 arrays in ``[0, 1]``. :func:`read_image` turns any file Pillow can
open (PNG, JPEG, WebP, TIFF, BMP, ...) into a :class:`LoadedImage`: an ``HxWx3`` RGB plane, an
optional separate alpha plane, and what is needed to write the result back faithfully (grey or
colour, 8 or 16 bits, ICC profile). :func:`write_image` does the reverse, atomically, and never
overwrites an input. Every failure a user can cause is an :class:`~stablesr.errors.InputImageError`
with a one-line message naming the file.

16-bit colour images need OpenCV (``pip install opencv-python-headless``, the ``io16`` extra):
Pillow has no multi-channel 16-bit modes and would silently drop the low byte.
"""

from __future__ import annotations

import glob
import os
import secrets
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO  # absolute import: the standard library's io, not this module
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from .errors import InputImageError, StableSRError

if TYPE_CHECKING:  # torch is heavy; only the tensor helpers need it, and they import it lazily
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "OUTPUT_EXTENSIONS",
    "LoadedImage",
    "collect_inputs",
    "from_tensor",
    "output_path",
    "read_image",
    "resolve_extension",
    "to_numpy",
    "to_tensor",
    "write_image",
]

#: Default pixel limit of :func:`read_image` (guards against decompression bombs).
DEFAULT_MAX_PIXELS = 200_000_000

#: File extensions picked up when a directory is given to :func:`collect_inputs`.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})

#: Output extension -> Pillow format name.
OUTPUT_EXTENSIONS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
}

_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
# Extension used for "same" when the source format has no writer here (GIF, PPM, ...).
_FORMAT_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "JPG": "jpg",
    "MPO": "jpg",
    "WEBP": "webp",
    "TIFF": "tif",
    "TIF": "tif",
    "BMP": "bmp",
}
_GREY_16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's convert("L")
_EXIF_ORIENTATION = 0x0112

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
    except Exception as exc:  # Pillow's plugins raise a zoo of types for bad data
        raise InputImageError(p, _reason_for(exc)) from exc


def _decode_opened(p: Path, im: ImageFile.ImageFile, max_pixels: int | None) -> LoadedImage:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InputImageError(p, "image has zero width or height")
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            p,
            f"image is {width}x{height} ({width * height:,} pixels), above the limit of {max_pixels:,} "
            "pixels (possible decompression bomb); raise the pixel limit if the file is trusted",
        )
    frames = getattr(im, "n_frames", 1)
    # MPO (most phone JPEGs) stores previews or depth maps as extra frames; the first is the photo.
    if frames > 1 and im.format != "MPO":
        raise InputImageError(p, f"animated or multi-page image ({frames} frames) is not supported; save one frame")

    fmt = im.format or "unknown"
    rawmode = _tile_rawmode(im)  # before load(), which clears the tiles
    # Decoding here also validates 16-bit files before OpenCV sees them: OpenCV only prints
    # warnings and returns None for truncated or corrupt data.
    im.load()
    icc = im.info.get("icc_profile") or None
    orientation = _exif_orientation(im)  # after load(): a PNG's eXIf chunk may follow the pixels

    if ";16" in rawmode and im.mode not in _GREY_16_MODES:
        # 16-bit colour and/or alpha: Pillow kept only the high byte of each sample.
        values, alpha = _decode_16bit_cv2(p, im)
        is_grey, bit_depth = rawmode.startswith(("L", "I")), 16
    else:
        source: Image.Image = im
        if im.mode == "CMYK":
            source, icc = _cmyk_to_rgb(im, icc)
        values, alpha, is_grey, bit_depth = _pillow_planes(p, source)

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


def _pillow_planes(p: Path, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool, int]:
    """Return (values HxW or HxWx3, alpha or None, is_grey, bit_depth) from a loaded Pillow image."""
    mode = im.mode
    if mode in _GREY_16_MODES:
        # "I" is how older Pillow versions (and some TIFFs) present 16-bit grey.
        grey = np.clip(np.asarray(im).astype(np.float32), 0, 65535) / 65535
        return grey, None, True, 16
    if mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32)), 0, 1)
        return grey, None, True, 16  # float data has more than 8 bits: keep precision on output

    has_key_colour = "transparency" in im.info  # tRNS / palette transparency is alpha too
    if mode in ("LA", "La") or (mode in ("1", "L") and has_key_colour):
        target, is_grey = "LA", True
    elif mode in ("1", "L"):
        target, is_grey = "L", True
    elif mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and has_key_colour):
        target, is_grey = "RGBA", False
    else:
        target, is_grey = "RGB", False
    if mode != target:
        try:
            im = im.convert(target)
        except ValueError:
            raise InputImageError(p, f"unsupported colour mode {mode!r}") from None

    planes = np.asarray(im, dtype=np.float32) / 255
    if target == "LA":
        return planes[..., 0], planes[..., 1], True, 8
    if target == "RGBA":
        return planes[..., :3], planes[..., 3], False, 8
    return planes, None, is_grey, 8


def _decode_16bit_cv2(p: Path, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a 16-bit colour/alpha PNG or TIFF with OpenCV; returns (RGB HxWx3, alpha or None)."""
    cv2 = _import_cv2()
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


def _import_cv2() -> Any:
    """OpenCV, or None when it is not installed (it is an optional dependency)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


# --------------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    is_grey: bool = False,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    quality: int = 95,
    protected: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write float planes in ``[0, 1]`` to ``path`` atomically; the extension picks the format.

    ``rgb`` is HxWx3 (or HxW grey). Values are clipped and rounded. ``is_grey`` writes one channel
    (BT.601 luma); ``alpha`` (HxW) is re-attached; ``bit_depth=16`` gives 16-bit PNG/TIFF (other
    formats are 8-bit only); ``icc_profile`` is embedded where the format and colour space allow;
    ``quality`` applies to JPEG/WebP. The file appears complete or not at all, and a target that is
    (or resolves to) one of ``protected`` is refused. The output folder is created if needed.

    Example:
        >>> img = read_image("in/photo.png")  # doctest: +SKIP
        >>> write_image("out/photo.png", img.rgb, alpha=img.alpha, is_grey=img.is_grey,  # doctest: +SKIP
        ...             bit_depth=img.bit_depth, icc_profile=img.icc_profile, protected=[img.path])
        PosixPath('out/photo.png')
    """
    target = Path(path)
    fmt = OUTPUT_EXTENSIONS.get(target.suffix.lower().lstrip("."))
    if fmt is None:
        raise InputImageError(
            target,
            f"unsupported output extension {target.suffix!r}; use one of {', '.join(sorted(OUTPUT_EXTENSIONS))}",
        )
    _refuse_protected(target, protected)
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        raise InputImageError(target, f"{fmt} cannot store transparency; write .png, .webp or .tif instead")
    if target.is_dir():
        raise InputImageError(target, "is a directory")
    planes = _output_planes(rgb, alpha, is_grey)
    sixteen = bit_depth == 16 and fmt in _SIXTEEN_BIT_FORMATS
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_output(target) as stream:
            _encode(stream, fmt, planes, sixteen, icc_profile, quality)
    except OSError as exc:
        raise InputImageError(target, f"cannot write file ({exc.strerror or exc})") from exc
    return target


def _refuse_protected(target: Path, protected: Sequence[str | os.PathLike[str]]) -> None:
    real = os.path.realpath(target)
    for item in protected:
        if os.path.realpath(item) == real or _same_file(target, item):
            raise InputImageError(
                target, "refusing to overwrite an input image; choose another output folder, suffix or extension"
            )


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True for hard links and case variants on case-insensitive file systems; False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _output_planes(rgb: np.ndarray, alpha: np.ndarray | None, is_grey: bool) -> np.ndarray:
    """Stack what will be written into one float32 HxWxC array, C in {1 (L), 2 (LA), 3 (RGB), 4 (RGBA)}."""
    values = np.asarray(rgb, dtype=np.float32)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[2] not in (1, 3):
        raise ValueError(f"rgb must be HxWx3 or HxW, got shape {values.shape}")
    if values.shape[2] == 3 and is_grey:
        values = (np.nan_to_num(values) @ _LUMA)[..., None]
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float32)
        if a.shape != values.shape[:2]:
            raise ValueError(f"alpha must be HxW = {values.shape[:2]}, got shape {a.shape}")
        values = np.concatenate([values, a[..., None]], axis=2)
    return values


def _quantise(values: np.ndarray, bits: int) -> np.ndarray:
    """Clip to [0, 1] and round (not truncate) to 8- or 16-bit integers; NaN becomes 0."""
    top = (1 << bits) - 1
    scaled = np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * top)
    return scaled.astype(np.uint16 if bits == 16 else np.uint8)


def _encode(stream: IO[bytes], fmt: str, planes: np.ndarray, sixteen: bool, icc: bytes | None, quality: int) -> None:
    """Encode ``planes`` (see :func:`_output_planes`) as ``fmt`` into ``stream``."""
    channels = planes.shape[2]
    if sixteen and channels > 1:
        # Pillow has no multi-channel 16-bit modes, so colour/alpha at 16 bits goes through OpenCV.
        cv2 = _import_cv2()
        if cv2 is not None:
            stream.write(_encode_16bit_cv2(cv2, fmt, planes, icc))
            return
        warnings.warn(
            "opencv-python-headless is not installed: writing 8-bit instead of 16-bit", RuntimeWarning, stacklevel=3
        )
        sixteen = False

    if sixteen:
        im = Image.fromarray(_quantise(planes[..., 0], 16))  # mode "I;16"
    else:
        ints = _quantise(planes, 8)
        im = Image.fromarray(ints[..., 0] if channels == 1 else ints)  # L, LA, RGB or RGBA
    if fmt == "WEBP" and im.mode in ("L", "LA"):
        im = im.convert("RGB" if im.mode == "L" else "RGBA")  # WebP has no grey modes

    options: dict[str, Any] = {}
    if icc and fmt != "BMP" and _icc_fits(icc, im.mode):
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options["quality"] = quality
        if quality >= 90:
            options["subsampling"] = 0  # 4:4:4: chroma halving would undo part of the upscaling
    elif fmt == "WEBP":
        options["quality"] = quality
        options["lossless"] = quality >= 100
    elif fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    im.save(stream, format=fmt, **options)


def _encode_16bit_cv2(cv2: Any, fmt: str, planes: np.ndarray, icc: bytes | None) -> bytes:
    ints = _quantise(planes, 16)
    if ints.shape[2] == 2:
        # OpenCV cannot write grey+alpha; RGBA keeps every bit (the file is then colour).
        ints = ints[..., [0, 0, 0, 1]]
    order = [2, 1, 0] if ints.shape[2] == 3 else [2, 1, 0, 3]  # OpenCV wants BGR(A)
    ok, buffer = cv2.imencode(".png" if fmt == "PNG" else ".tif", np.ascontiguousarray(ints[..., order]))
    if not ok:
        raise OSError(f"OpenCV could not encode a 16-bit {fmt}")
    data = buffer.tobytes()
    # OpenCV cannot embed ICC profiles; for PNG we add the chunk ourselves (TIFF output goes without).
    if fmt == "PNG" and icc and _icc_fits(icc, "RGB"):
        data = _png_with_icc(data, icc)
    return data


def _icc_fits(icc: bytes, mode: str) -> bool:
    """Whether the profile's colour space (header bytes 16-20) matches the written mode.

    A grey profile on an RGB file (or the reverse) makes viewers misrender or reject the file.
    """
    space = icc[16:20]
    return space == (b"GRAY" if mode in ("L", "LA", "I;16") else b"RGB ")


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (it must precede PLTE and IDAT)."""
    if png[12:16] != b"IHDR":
        raise OSError("unexpected PNG layout from the encoder")
    body = b"ICC profile\x00\x00" + zlib.compress(icc)  # name, NUL, compression method 0 (zlib)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, length, type, IHDR data, CRC
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


@contextmanager
def _atomic_output(target: Path) -> Iterator[IO[bytes]]:
    """Yield a temporary file next to ``target``; on success fsync it and rename it onto ``target``.

    On any exception (KeyboardInterrupt included) the temporary file is removed, so a partial
    image never appears under the final name and an existing file there stays intact.
    """
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _create_temp(target: Path) -> tuple[int, str]:
    # os.open with 0o666 lets the umask decide permissions, as for a normally created file
    # (tempfile.mkstemp would leave the output readable by its owner only).
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {target.parent}")


def _fsync_directory(folder: Path) -> None:
    """Make the rename durable; best effort (not possible on Windows)."""
    with suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------- naming


def resolve_extension(requested: str, source_format: str, has_alpha: bool) -> str:
    """Pick the output extension (no dot).

    ``requested`` is an extension (``"png"``, ``"jpg"``, ``"webp"``, ``"tif"``, ...) or ``"same"``,
    which means the source's: ``source_format`` is the input's extension with its dot (``".JPG"``)
    or its Pillow format name (``"JPEG"``); sources with no writer here (GIF, ...) give ``"png"``. When the
    chosen format cannot hold alpha (JPEG, BMP) and the image has alpha, the answer is ``"png"``.

    Example:
        >>> resolve_extension("same", ".jpg", has_alpha=False), resolve_extension("jpg", "PNG", has_alpha=True)
        ('jpg', 'png')
    """
    wanted = requested.strip().lower().lstrip(".")
    if wanted == "same":
        source = source_format.strip()
        if source.startswith(".") and source[1:].lower() in OUTPUT_EXTENSIONS:
            wanted = source[1:].lower()  # an extension: keep the user's spelling (.jpeg stays jpeg)
        else:
            wanted = _FORMAT_EXTENSIONS.get(source.upper(), "png")
    if wanted not in OUTPUT_EXTENSIONS:
        raise StableSRError(
            f"unsupported output format {requested!r}; use same or one of {', '.join(sorted(OUTPUT_EXTENSIONS))}"
        )
    if has_alpha and OUTPUT_EXTENSIONS[wanted] not in _ALPHA_FORMATS:
        return "png"
    return wanted


def output_path(input_path: Path, out_dir: Path, *, suffix: str = "", ext: str = "png") -> Path:
    """``out_dir / f"{stem}{suffix}.{ext}"``.

    Example:
        >>> output_path(Path("in/cat.jpg"), Path("out"), suffix="_x4", ext="png")
        PosixPath('out/cat_x4.png')
    """
    return Path(out_dir) / f"{Path(input_path).stem}{suffix}.{ext.lstrip('.')}"


def collect_inputs(specs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories and glob patterns into input paths.

    A directory gives its image files (by extension, case-insensitive; not recursive; hidden files
    skipped), sorted. A glob gives its matching files, sorted. A plain file is taken as is (reading
    it reports whether it is an image). Paths are deduplicated, keeping the first occurrence. The
    second result lists one message per spec that matched nothing.

    Example:
        >>> collect_inputs(["photos", "extra/*.png", "missing.png"])  # doctest: +SKIP
        ([PosixPath('photos/a.jpg'), PosixPath('extra/b.png')], ['missing.png: no such file or directory'])
    """
    found: list[Path] = []
    errors: list[str] = []
    for spec in specs:
        matches, problem = _expand(spec)
        found.extend(matches)
        if problem:
            errors.append(f"{spec}: {problem}")
    seen: set[str] = set()
    unique: list[Path] = []
    for path in found:
        key = os.path.normcase(os.path.realpath(path))  # "a.png" and "./a.png" are the same input
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, errors


def _expand(spec: str) -> tuple[list[Path], str | None]:
    """Paths for one spec, and a problem description when it matched nothing."""
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        images = sorted(
            entry
            for entry in path.iterdir()
            if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
        )
        return images, None if images else "no image files in this directory"
    if path.exists():  # checked before globbing so names like "shot[1].png" work literally
        return [path], None
    if glob.has_magic(spec):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(m))
        return matches, None if matches else "no matching files"
    return [], "no such file or directory"


# --------------------------------------------------------------------------------------------- tensors


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWxC (or HxW) numpy -> 1xCxHxW float32 CPU tensor (a copy).

    Example:
        >>> to_tensor(np.zeros((4, 6, 3), np.float32)).shape
        torch.Size([1, 3, 4, 6])
    """
    import torch

    values = np.asarray(rgb, dtype=np.float32)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3:
        raise ValueError(f"expected an HxWxC array, got shape {values.shape}")
    return torch.from_numpy(values.transpose(2, 0, 1).copy()).unsqueeze(0)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """1xCxHxW (or CxHxW) tensor, any device/dtype -> HxWxC float32 numpy array.

    Example:
        >>> import torch
        >>> to_numpy(torch.zeros(1, 3, 4, 6)).shape
        (4, 6, 3)
    """
    import torch

    t = tensor.detach()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"expected a 1xCxHxW or CxHxW tensor, got shape {tuple(t.shape)}")
    return t.to(device="cpu", dtype=torch.float32).permute(1, 2, 0).contiguous().numpy()


#: Alias of :func:`to_numpy`.
from_tensor = to_numpy
