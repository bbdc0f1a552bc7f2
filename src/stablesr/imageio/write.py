"""Writing float planes in ``[0, 1]`` to image files, atomically and never over an input."""

from __future__ import annotations

import io
import os
import re
import secrets
import struct
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageCms

from ..errors import InputImageError
from . import read
from .naming import ALPHA_FORMATS, OUTPUT_EXTENSIONS

__all__ = ["check_writable_folder", "clean_stale_temps", "write_image"]

# Our temporary outputs: ".<final name>.<8 hex>.tmp" (see _create_temp); nothing else is ever removed.
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
STALE_TEMP_SECONDS = 600  # a write in progress (another process, another rank) is never this old

_SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's convert("L")


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
    if alpha is not None and fmt not in ALPHA_FORMATS:
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
    if sixteen and fmt == "TIFF":  # every layout, with its ICC profile and the alpha marked as such
        stream.write(_encode_16bit_tiff(planes, icc))
        return
    if sixteen and channels == 2:  # grey+alpha PNG: neither Pillow nor OpenCV writes it at 16 bits
        stream.write(_encode_16bit_grey_alpha_png(planes, icc))
        return
    if sixteen and channels > 1:
        # Pillow has no multi-channel 16-bit modes, so colour/alpha at 16 bits goes through OpenCV.
        cv2 = read.import_cv2()
        if cv2 is not None:
            stream.write(_encode_16bit_png_cv2(cv2, planes, icc))
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
    if fmt == "WEBP" and im.mode in ("L", "LA"):  # WebP has no grey modes
        im, icc = _grey_to_srgb(im, icc)

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


def _encode_16bit_png_cv2(cv2: Any, planes: np.ndarray, icc: bytes | None) -> bytes:
    """16-bit RGB(A) PNG through OpenCV, with the ICC chunk added by us (OpenCV cannot embed one)."""
    ints = _quantise(planes, 16)
    order = [2, 1, 0] if ints.shape[2] == 3 else [2, 1, 0, 3]  # OpenCV wants BGR(A)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(ints[..., order]))
    if not ok:
        raise OSError("OpenCV could not encode a 16-bit PNG")
    data = buffer.tobytes()
    if icc and _icc_fits(icc, "RGB"):
        data = _png_with_icc(data, icc)
    return data


def _encode_16bit_tiff(planes: np.ndarray, icc: bytes | None) -> bytes:
    """16-bit TIFF (grey, grey+alpha, RGB, RGBA; deflate) through tifffile: the alpha is tagged as unassociated
    alpha (ExtraSamples) and a matching ICC profile is embedded."""
    import tifffile

    ints = _quantise(planes, 16)
    colour = ints.shape[2] >= 3
    has_alpha = ints.shape[2] in (2, 4)
    options: dict[str, Any] = {"photometric": "rgb" if colour else "minisblack", "compression": "zlib",
                               "extrasamples": ["unassalpha"] if has_alpha else None}
    if icc and _icc_fits(icc, "RGB" if colour else "L"):
        options["iccprofile"] = icc
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, ints[..., 0] if ints.shape[2] == 1 else ints, **options)
    return buffer.getvalue()


def _encode_16bit_grey_alpha_png(planes: np.ndarray, icc: bytes | None) -> bytes:
    """A 16-bit grey+alpha PNG (colour type 4), written here: every row Sub-filtered, then deflated."""
    ints = _quantise(planes, 16)
    h, w, c = ints.shape
    raw = ints.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    step = c * 2  # bytes per pixel: the Sub filter subtracts the same byte of the pixel to the left
    filtered = raw.copy()
    filtered[:, step:] = raw[:, step:] - raw[:, :-step]  # uint8 arithmetic wraps modulo 256, as PNG wants
    rows = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1)  # filter type 1 before each row
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))]
    if icc and _icc_fits(icc, "LA"):
        chunks.append(_icc_chunk(icc))
    chunks += [_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _grey_to_srgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """A grey image as RGB(A) for a format without grey modes; a grey ICC profile is applied (the tones are
    converted to sRGB and the sRGB profile returned) rather than dropped."""
    alpha = im.getchannel("A") if im.mode == "LA" else None
    grey = im.getchannel("L") if alpha is not None else im
    rgb, out_icc = grey.convert("RGB"), icc
    if icc and icc[16:20] == b"GRAY":
        out_icc = None  # unless the conversion below works: a grey profile must not tag an RGB file
        with suppress(ImageCms.PyCMSError, OSError, ValueError):  # a damaged profile: plain grey values
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(grey, source, srgb, outputMode="RGB") or rgb
            out_icc = srgb.tobytes()
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb, out_icc


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
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, length, type, IHDR data, CRC
    return png[:end_of_ihdr] + _icc_chunk(icc) + png[end_of_ihdr:]


def _icc_chunk(icc: bytes) -> bytes:
    return _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))  # name, NUL, method 0 (zlib)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


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


def clean_stale_temps(folder: str | os.PathLike[str], *, min_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove our own temporary files left in ``folder`` by a killed write (older than ``min_age_s``).

    Only names of the pattern this module creates (``.<name>.<8 hex>.tmp``), only directly in
    ``folder``, only regular files; returns what was removed.

    Example:
        >>> clean_stale_temps("results")  # doctest: +SKIP
        [PosixPath('results/.photo.png.3fa2c1d0.tmp')]
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        with suppress(OSError):
            st = entry.lstat()
            if entry.is_file() and not entry.is_symlink() and now - st.st_mtime >= min_age_s:
                entry.unlink()
                removed.append(entry)
    return removed


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Check that ``folder`` can receive outputs, leaving nothing behind (an existing folder gets a real test
    file; a missing one, a test folder made and removed in its nearest existing parent, since permission bits
    say nothing for root or on read-only and virtual file systems).

    A missing folder is fine when that test passes (it is created at the first write). Raises
    :class:`~stablesr.errors.InputImageError` naming the folder.
    """
    target = Path(folder)
    try:
        if target.is_dir():
            fd, tmp = _create_temp(target / "write-check")
            os.close(fd)
            os.unlink(tmp)
            return
        parent = target
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        probe = parent / f".stablesr-write-check-{secrets.token_hex(4)}"
        try:
            probe.mkdir()
        except OSError as e:
            raise PermissionError(e.errno, f"cannot create folders in {parent}") from None
        probe.rmdir()
    except OSError as e:
        raise InputImageError(target, f"output folder is not writable ({e.strerror or e})") from None
