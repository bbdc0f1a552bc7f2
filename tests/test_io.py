"""Tests for stablesr.imageio: reading, writing and naming image files (offline, a few seconds)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, require
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageCms, ImageOps

from stablesr.errors import InputImageError, StableSRError
from stablesr.imageio import naming, read, write

REAL_LR = DATA / "real_lr"


@pytest.fixture
def real_lr() -> Path:
    return require(REAL_LR)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<not a file>"


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A minimal PNG (filter 0 on every row); ``extra`` chunks go between IHDR and IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _png16(samples: np.ndarray, colour_type: int, extra: bytes = b"") -> bytes:
    """Encode an HxWxC uint16 array as a 16-bit PNG, independently of the code under test."""
    big_endian = samples.astype(">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in big_endian)
    return _raw_png(samples.shape[1], samples.shape[0], 16, colour_type, rows, extra)


def _exif_chunk(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _png_chunk(b"eXIf", exif.tobytes())


# --------------------------------------------------------------------------------------------- reading


def test_reads_rgb_png_and_jpeg(real_lr: Path) -> None:
    png = read.read_image(real_lr / "00003.png")
    assert png.rgb.shape == (256, 512, 3) and png.rgb.dtype == np.float32
    assert png.alpha is None and not png.is_grey and png.bit_depth == 8 and png.format == "PNG"
    assert png.path == real_lr / "00003.png"
    jpg = read.read_image(str(real_lr / "0030.jpg"))
    assert jpg.rgb.shape == (220, 220, 3) and jpg.format == "JPEG"
    for img in (png, jpg):
        assert 0.0 <= img.rgb.min() and img.rgb.max() <= 1.0 and img.rgb.flags.c_contiguous
        np.testing.assert_allclose(img.rgb * 255, np.rint(img.rgb * 255), atol=1e-3)  # exact 8-bit values


@pytest.mark.parametrize(("name", "ext"), [("00017_gray.png", "png"), ("wolf_gray.jpg", "jpg")])
def test_grey_stays_grey(real_lr: Path, tmp_path: Path, name: str, ext: str) -> None:
    img = read.read_image(real_lr / name)
    assert img.is_grey and img.rgb.shape[2] == 3
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 1]) and np.array_equal(img.rgb[..., 0], img.rgb[..., 2])
    out = write.write_image(tmp_path / f"out.{ext}", img.rgb, is_grey=True, icc_profile=img.icc_profile)
    with Image.open(out) as written:
        assert written.mode == "L"
        assert written.info.get("icc_profile") == img.icc_profile  # wolf_gray.jpg has a GRAY profile
    again = read.read_image(out)
    assert again.is_grey
    tolerance = 0.5 / 255 + 1e-6 if ext == "png" else 0.05
    assert np.abs(again.rgb - img.rgb).max() <= tolerance


def test_rgba_alpha_split_and_round_trip(real_lr: Path, tmp_path: Path) -> None:
    img = read.read_image(real_lr / "children-alpha.png")
    assert img.alpha is not None and img.alpha.shape == img.rgb.shape[:2] and img.alpha.dtype == np.float32
    assert img.alpha.min() < 0.5 < img.alpha.max()
    with Image.open(real_lr / "children-alpha.png") as ref:
        expected = np.asarray(ref.convert("RGBA"), dtype=np.float32) / 255
    np.testing.assert_array_equal(img.rgb, expected[..., :3])
    np.testing.assert_array_equal(img.alpha, expected[..., 3])
    out = write.write_image(tmp_path / "children.png", img.rgb, alpha=img.alpha)
    with Image.open(out) as written:
        assert written.mode == "RGBA"
    again = read.read_image(out)
    np.testing.assert_array_equal(again.alpha, img.alpha)
    np.testing.assert_array_equal(again.rgb, img.rgb)


def test_16bit_rgba_keeps_precision_and_round_trips(real_lr: Path, tmp_path: Path) -> None:
    img = read.read_image(real_lr / "tree_alpha_16bit.png")
    assert img.bit_depth == 16 and not img.is_grey and img.alpha is not None
    assert img.rgb.shape == (256, 342, 3) and img.icc_profile is not None
    steps = img.rgb * 255
    assert np.mean(np.abs(steps - np.rint(steps)) > 1e-3) > 0.5  # not quantised to 8 bit
    out = write.write_image(tmp_path / "tree.png", img.rgb, alpha=img.alpha, bit_depth=16, icc_profile=img.icc_profile)
    with Image.open(out) as written:
        assert written.tile[0][3] == "RGBA;16B"  # a real 16-bit RGBA PNG
        assert written.info.get("icc_profile") == img.icc_profile
    again = read.read_image(out)
    assert again.bit_depth == 16 and again.icc_profile == img.icc_profile
    assert np.abs(again.rgb - img.rgb).max() <= 1 / 65535
    assert np.abs(again.alpha - img.alpha).max() <= 1 / 65535


@pytest.mark.parametrize("colour_type", [2, 4, 6])  # RGB, grey+alpha, RGBA
def test_16bit_png_decoded_exactly(tmp_path: Path, colour_type: int) -> None:
    channels = {2: 3, 4: 2, 6: 4}[colour_type]
    samples = np.random.default_rng(colour_type).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(_png16(samples, colour_type))
    img = read.read_image(path)
    assert img.bit_depth == 16 and img.is_grey == (colour_type == 4)
    colour = samples[..., :1].repeat(3, axis=2) if colour_type == 4 else samples[..., :3]
    np.testing.assert_allclose(img.rgb * 65535, colour, atol=1e-2)
    if channels in (2, 4):
        np.testing.assert_allclose(img.alpha * 65535, samples[..., -1], atol=1e-2)
    else:
        assert img.alpha is None


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_grey_and_colour_round_trip(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 65536, (6, 9)).astype(np.float32) / 65535
    rgb = rng.integers(0, 65536, (6, 9, 3)).astype(np.float32) / 65535
    out = write.write_image(tmp_path / f"grey.{ext}", grey, is_grey=True, bit_depth=16)
    with Image.open(out) as written:
        assert written.mode.startswith("I;16")
    back = read.read_image(out)
    assert back.is_grey and back.bit_depth == 16
    assert np.abs(back.rgb[..., 0] - grey).max() <= 0.5 / 65535 + 1e-7
    out = write.write_image(tmp_path / f"colour.{ext}", rgb, bit_depth=16)
    back = read.read_image(out)
    assert back.bit_depth == 16 and not back.is_grey
    assert np.abs(back.rgb - rgb).max() <= 0.5 / 65535 + 1e-7


def test_exif_orientation_6_transposes_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(path, exif=exif)
    img = read.read_image(path)
    assert img.rgb.shape == (40, 20, 3)  # 40 wide x 20 high, rotated a quarter turn


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "o.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im), dtype=np.float32) / 255
    np.testing.assert_array_equal(read.read_image(path).rgb, expected)


def test_orientation_applied_on_16bit_path(tmp_path: Path) -> None:
    samples = np.random.default_rng(8).integers(0, 65536, (4, 6, 4), dtype=np.uint16)
    path = tmp_path / "o16.png"
    path.write_bytes(_png16(samples, 6, extra=_exif_chunk(8)))
    img = read.read_image(path)
    expected = np.rot90(samples, k=1)  # orientation 8: a quarter turn anticlockwise
    assert img.rgb.shape == (6, 4, 3)
    np.testing.assert_allclose(img.alpha * 65535, expected[..., 3], atol=1e-2)
    np.testing.assert_allclose(img.rgb * 65535, expected[..., :3], atol=1e-2)


def test_cmyk_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    img = read.read_image(path)
    assert img.rgb.shape == (8, 16, 3) and not img.is_grey and img.alpha is None
    r, g, b = img.rgb.reshape(-1, 3).mean(axis=0)
    assert r > 0.9 and g < 0.1 and b < 0.1


def test_palette_png_reads_as_rgb_and_palette_transparency_as_alpha(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    palette_image = Image.fromarray(pixels).quantize(16)
    path = tmp_path / "palette.png"
    palette_image.save(path)
    img = read.read_image(path)
    assert img.rgb.shape == (10, 12, 3) and img.alpha is None and not img.is_grey
    np.testing.assert_array_equal(img.rgb, np.asarray(palette_image.convert("RGB"), dtype=np.float32) / 255)

    palette_image.info["transparency"] = 0
    path = tmp_path / "palette-transparent.png"
    palette_image.save(path, transparency=0)
    img = read.read_image(path)
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha == 0, np.asarray(palette_image) == 0)


@pytest.mark.parametrize(
    ("mode", "fmt", "grey", "alpha", "depth"),
    [
        ("1", "PNG", True, False, 8),
        ("L", "BMP", True, False, 8),
        ("LA", "PNG", True, True, 8),
        ("RGBA", "TIFF", False, True, 8),
        ("RGB", "WEBP", False, False, 8),
        ("I;16", "PNG", True, False, 16),
        ("F", "TIFF", True, False, 16),
    ],
)
def test_modes(tmp_path: Path, mode: str, fmt: str, grey: bool, alpha: bool, depth: int) -> None:
    colour = {"1": 1, "L": 128, "LA": (128, 64), "RGBA": (1, 2, 3, 4), "RGB": (9, 99, 199), "I;16": 30000, "F": 0.25}
    path = tmp_path / f"m.{fmt.lower()}"
    Image.new(mode, (5, 3), colour[mode]).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    img = read.read_image(path)
    assert img.rgb.shape == (3, 5, 3) and img.rgb.dtype == np.float32
    assert (img.is_grey, img.alpha is not None, img.bit_depth, img.format) == (grey, alpha, depth, fmt)
    expected = {
        "1": 1.0,
        "L": 128 / 255,
        "LA": 128 / 255,
        "RGBA": 1 / 255,
        "RGB": 9 / 255,
        "I;16": 30000 / 65535,
        "F": 0.25,
    }[mode]
    assert img.rgb[0, 0, 0] == pytest.approx(expected, abs=1e-6)


def test_icc_profile_round_trip_png(tmp_path: Path) -> None:
    icc = _srgb_icc()
    rgb = np.random.default_rng(1).random((6, 8, 3), dtype=np.float32)
    out = write.write_image(tmp_path / "icc.png", rgb, icc_profile=icc)
    assert read.read_image(out).icc_profile == icc
    out = write.write_image(tmp_path / "icc16.png", rgb, bit_depth=16, icc_profile=icc)  # OpenCV path
    assert read.read_image(out).icc_profile == icc


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_grey_alpha_stays_grey_with_its_grey_profile(real_lr: Path, tmp_path: Path, ext: str) -> None:
    """Neither Pillow nor OpenCV writes 16-bit grey+alpha: it used to come out as colour RGBA without its profile."""
    grey_icc = read.read_image(real_lr / "wolf_gray.jpg").icc_profile
    assert grey_icc is not None and grey_icc[16:20] == b"GRAY"
    rng = np.random.default_rng(4)
    grey, alpha = (rng.integers(0, 65536, (6, 9)).astype(np.float32) / 65535 for _ in range(2))
    out = write.write_image(tmp_path / f"la.{ext}", grey, alpha=alpha, is_grey=True, bit_depth=16,
                            icc_profile=grey_icc)
    back = read.read_image(out)
    assert back.is_grey and back.bit_depth == 16 and back.icc_profile == grey_icc
    assert np.abs(back.rgb[..., 0] - grey).max() <= 0.5 / 65535 and np.abs(back.alpha - alpha).max() <= 0.5 / 65535
    if ext == "png":  # an independent decoder: colour type 4 (grey+alpha), 16 bits; OpenCV's samples exact
        data = out.read_bytes()
        assert data[12:16] == b"IHDR" and data[24] == 16 and data[25] == 4
        decoded = read.import_cv2().imread(str(out), -1)  # IMREAD_UNCHANGED: grey replicated, alpha last
        np.testing.assert_array_equal(decoded[..., 0], np.rint(grey * 65535))
        np.testing.assert_array_equal(decoded[..., -1], np.rint(alpha * 65535))
    else:
        import tifffile

        with tifffile.TiffFile(out) as tif:
            page = tif.pages[0]
            assert page.photometric == 1 and page.samplesperpixel == 2 and page.extrasamples == (2,)  # alpha
            np.testing.assert_array_equal(page.asarray()[..., 1], np.rint(alpha * 65535))


@pytest.mark.parametrize("layout", ["grey_alpha_planar", "rgba_planar", "grey_alpha_bigtiff", "rgba_big_endian"])
def test_16bit_tiff_layouts_read_exactly(tmp_path: Path, layout: str) -> None:
    """Plane-by-plane samples, BigTIFF and big-endian files (written by tifffile, read back by our reader)."""
    import tifffile

    channels = 2 if layout.startswith("grey") else 4
    samples = np.random.default_rng(channels).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    path, options = tmp_path / f"{layout}.tif", {"extrasamples": ["unassalpha"]}
    if "planar" in layout:
        samples_written, options["planarconfig"] = np.moveaxis(samples, -1, 0), "separate"
    else:
        samples_written = samples
    options.update({"bigtiff": True} if "bigtiff" in layout else {"byteorder": ">"} if "big_endian" in layout else {})
    tifffile.imwrite(path, samples_written, photometric="minisblack" if channels == 2 else "rgb", **options)
    img = read.read_image(path)
    assert img.bit_depth == 16 and img.is_grey == (channels == 2)
    colour = samples[..., :1].repeat(3, axis=2) if channels == 2 else samples[..., :3]
    np.testing.assert_allclose(img.rgb * 65535, colour, atol=1e-2)
    np.testing.assert_allclose(img.alpha * 65535, samples[..., -1], atol=1e-2)


def test_tiff_whose_codec_is_missing_says_which_package(tmp_path: Path) -> None:
    import importlib.util

    import tifffile

    if importlib.util.find_spec("imagecodecs") is not None:
        pytest.skip("imagecodecs is installed here: tifffile would try to decode the (fake) LZW data")

    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.zeros((4, 4, 2), np.uint16), photometric="minisblack", extrasamples=["unassalpha"])
    data = bytearray(path.read_bytes())  # mark it LZW (tag 259 = 5): tifffile decodes LZW only with imagecodecs
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] == 259:
            struct.pack_into("<H", data, at + 8, 5)
    path.write_bytes(bytes(data))
    with pytest.raises(InputImageError, match="needs the imagecodecs package") as caught:
        read.read_image(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_16bit_tiff_keeps_its_profile_and_tags_its_alpha(real_lr: Path, tmp_path: Path) -> None:
    import tifffile

    img = read.read_image(real_lr / "tree_alpha_16bit.png")
    out = write.write_image(tmp_path / "tree.tif", img.rgb, alpha=img.alpha, bit_depth=16, icc_profile=img.icc_profile)
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.bitspersample == 16 and page.samplesperpixel == 4 and page.extrasamples == (2,)
        assert bytes(page.tags[34675].value) == img.icc_profile
    back = read.read_image(out)
    assert back.bit_depth == 16 and back.icc_profile == img.icc_profile
    assert np.abs(back.rgb - img.rgb).max() <= 1 / 65535 and np.abs(back.alpha - img.alpha).max() <= 1 / 65535


def test_grey_profile_is_applied_when_the_format_has_no_grey(real_lr: Path, tmp_path: Path) -> None:
    """WebP has no grey mode: the grey profile's tones are converted to sRGB (and tagged so), not dropped."""
    img = read.read_image(real_lr / "wolf_gray.jpg")  # a GRAY "Dot Gain 15%" profile
    out = write.write_image(tmp_path / "wolf.webp", img.rgb, is_grey=True, icc_profile=img.icc_profile, quality=100)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    expected = ImageCms.profileToProfile(Image.fromarray(np.rint(img.rgb[..., 0] * 255).astype(np.uint8)),
                                         ImageCms.ImageCmsProfile(io.BytesIO(img.icc_profile)), srgb,
                                         outputMode="RGB")
    with Image.open(out) as written:
        assert written.mode == "RGB" and written.info["icc_profile"][16:20] == b"RGB "
        pixels = np.asarray(written, dtype=np.int16)
    assert np.abs(pixels - np.asarray(expected, dtype=np.int16)).max() <= 1  # lossless WebP, same transform
    naive = np.rint(img.rgb * 255)
    assert np.abs(pixels - naive).mean() > 5  # the tone curve was applied: not the raw grey values
    damaged, at = bytearray(img.icc_profile), img.icc_profile.find(b"kTRC")
    damaged[at:at + 4] = b"zzzz"  # the grey tone curve's tag renamed: no transform can be built
    out = write.write_image(tmp_path / "damaged.webp", img.rgb, is_grey=True, icc_profile=bytes(damaged), quality=100)
    with Image.open(out) as written:  # written all the same: the raw grey values, untagged
        assert "icc_profile" not in written.info and np.abs(np.asarray(written, np.int16) - naive).max() <= 1


def test_icc_profile_dropped_when_colour_space_does_not_match(tmp_path: Path) -> None:
    rgb_profile = _srgb_icc()
    out = write.write_image(
        tmp_path / "grey.png", np.full((4, 4, 3), 0.5, np.float32), is_grey=True, icc_profile=rgb_profile
    )
    assert read.read_image(out).icc_profile is None  # an RGB profile must not tag a grey file


def test_animated_gif_refused(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(InputImageError, match="animated") as caught:
        read.read_image(path)
    assert "\n" not in str(caught.value) and "anim.gif" in str(caught.value)


def test_single_frame_gif_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "still.gif"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    assert read.read_image(path).rgb.shape == (8, 8, 3)


def test_pixel_limit(real_lr: Path) -> None:
    with pytest.raises(InputImageError, match="limit") as caught:
        read.read_image(real_lr / "00003.png", max_pixels=1000)
    assert "00003.png" in str(caught.value) and "\n" not in str(caught.value)
    assert read.read_image(real_lr / "00003.png", max_pixels=None).rgb.shape == (256, 512, 3)


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (20_000, 10_000)])
def test_pixel_limit_replaces_pillow_bomb_guard(tmp_path: Path, width: int, height: int) -> None:
    # Headers only: 100 MP makes Pillow warn, 200 MP makes it raise; neither must leak through,
    # and nothing may be allocated for the pixels.
    path = tmp_path / "bomb.png"
    path.write_bytes(_raw_png(width, height, 8, 2, b"\x00"))
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputImageError, match="limit") as caught:
            read.read_image(path, max_pixels=50_000_000)
    message = str(caught.value)
    assert "bomb.png" in message and "DecompressionBomb" not in message and "\n" not in message
    assert f"{width}x{height}" in message
    assert Image.MAX_IMAGE_PIXELS == before


def _bad_files(root: Path) -> list[Path]:
    png = (REAL_LR / "00003.png").read_bytes()
    deep = (REAL_LR / "tree_alpha_16bit.png").read_bytes()
    jpg = (REAL_LR / "0030.jpg").read_bytes()
    files = {
        "empty.png": b"",
        "half.png": png[: len(png) // 2],
        "half16.png": deep[: len(deep) // 2],
        "half.jpg": jpg[: len(jpg) // 2],
        "noise.jpg": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "notes.png": b"this is a text file, not a picture\n",
        "header-only.png": png[:64],
    }
    paths = []
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths.append(root / name)
    (root / "x.png").mkdir()
    paths.append(root / "x.png")
    paths.append(root / "missing.png")
    return paths


def test_bad_files_raise_one_line_errors_and_stay_untouched(real_lr: Path, tmp_path: Path) -> None:
    paths = _bad_files(tmp_path)
    before = {p: _digest(p) for p in paths}
    for path in paths:
        with pytest.raises(InputImageError) as caught:
            read.read_image(path)
        message = str(caught.value)
        assert path.name in message and "\n" not in message, message
        assert "Traceback" not in message and len(message) < 300
        assert caught.value.path == str(path)
    assert {p: _digest(p) for p in paths} == before


def test_bad_file_reasons_are_specific(real_lr: Path, tmp_path: Path) -> None:
    paths = {p.name: p for p in _bad_files(tmp_path)}
    reasons = {name: _reason(path) for name, path in paths.items()}
    assert "empty" in reasons["empty.png"]
    assert "truncated" in reasons["half.png"] and "truncated" in reasons["half16.png"]
    assert "not a recognised image" in reasons["notes.png"] and "not a recognised image" in reasons["noise.jpg"]
    assert "directory" in reasons["x.png"]
    assert "not found" in reasons["missing.png"]


def _reason(path: Path) -> str:
    with pytest.raises(InputImageError) as caught:
        read.read_image(path)
    return caught.value.reason


def test_16bit_colour_without_opencv_is_a_clear_error(real_lr: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "import_cv2", lambda: None)
    with pytest.raises(InputImageError, match="opencv-python-headless"):
        read.read_image(real_lr / "tree_alpha_16bit.png")


# --------------------------------------------------------------------------------------------- writing


def test_rounding_not_truncation_and_clipping(tmp_path: Path) -> None:
    values = np.array([[0.49, 0.51, 1.49, 1.51, -50, 300, np.nan, 254.6]], dtype=np.float32) / 255
    out = write.write_image(tmp_path / "r.png", values, is_grey=True)
    with Image.open(out) as written:
        assert np.asarray(written).tolist() == [[0, 1, 1, 2, 0, 255, 0, 255]]
    deep = np.array([[0.49, 0.51, 65534.6]], dtype=np.float64) / 65535
    out = write.write_image(tmp_path / "r16.png", deep, is_grey=True, bit_depth=16)
    with Image.open(out) as written:
        assert np.asarray(written).tolist() == [[0, 1, 65535]]


@pytest.mark.parametrize(("ext", "tolerance"), [("png", 0), ("tif", 0), ("bmp", 0), ("jpg", 0.1), ("webp", 0.1)])
def test_formats_round_trip(real_lr: Path, tmp_path: Path, ext: str, tolerance: float) -> None:
    img = read.read_image(real_lr / "00003.png")
    out = write.write_image(tmp_path / f"out.{ext}", img.rgb, quality=95)
    again = read.read_image(out)
    assert again.rgb.shape == img.rgb.shape
    assert np.abs(again.rgb - img.rgb).mean() <= tolerance


def test_alpha_in_format_without_alpha_is_refused(tmp_path: Path) -> None:
    rgb, alpha = np.zeros((2, 2, 3), np.float32), np.ones((2, 2), np.float32)
    for ext in ("jpg", "bmp"):
        with pytest.raises(InputImageError, match="transparency"):
            write.write_image(tmp_path / f"a.{ext}", rgb, alpha=alpha)
    with pytest.raises(InputImageError, match="unsupported output extension"):
        write.write_image(tmp_path / "a.gif", rgb)
    assert list(tmp_path.iterdir()) == []


def test_webp_and_tiff_keep_alpha(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).random((5, 6, 3)).astype(np.float32)
    alpha = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    for ext in ("tif", "webp"):
        back = read.read_image(write.write_image(tmp_path / f"a.{ext}", rgb, alpha=alpha, quality=100))
        assert back.alpha is not None
        assert np.abs(back.alpha - alpha).max() <= 0.5 / 255 + 1e-6


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")
    seen_temp: list[str] = []

    def broken_encoder(stream, *args, **kwargs):  # type: ignore[no-untyped-def]
        stream.write(b"partial data")
        seen_temp.extend(p.name for p in tmp_path.iterdir() if p.name != "out.png")
        raise RuntimeError("encoder blew up")

    monkeypatch.setattr(write, "_encode", broken_encoder)
    with pytest.raises(RuntimeError):
        write.write_image(target, np.zeros((2, 2, 3), np.float32))
    assert len(seen_temp) == 1 and seen_temp[0].startswith(".out.png.") and seen_temp[0].endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert target.read_bytes() == b"previous result"


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(stream, *args, **kwargs):  # type: ignore[no-untyped-def]
        stream.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(write, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write.write_image(tmp_path / "sub" / "out.png", np.zeros((2, 2, 3), np.float32))
    assert list((tmp_path / "sub").iterdir()) == []


def test_os_error_while_writing_becomes_input_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(stream, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write, "_encode", disk_full)
    with pytest.raises(InputImageError, match="No space left") as caught:
        write.write_image(tmp_path / "out.png", np.zeros((2, 2, 3), np.float32))
    assert "out.png" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_write_creates_folders_and_leaves_no_temp(tmp_path: Path) -> None:
    out = write.write_image(tmp_path / "a" / "b" / "c.png", np.zeros((3, 4, 3), np.float32))
    assert out == tmp_path / "a" / "b" / "c.png" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["c.png"]


def test_never_overwrites_protected_input(real_lr: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes((real_lr / "00003.png").read_bytes())
    digest = _digest(source)
    img = read.read_image(source)
    (tmp_path / "sub").mkdir()
    os.link(source, tmp_path / "hardlink.png")
    os.symlink(source, tmp_path / "symlink.png")
    for target in (source, tmp_path / "sub" / ".." / "in.png", tmp_path / "hardlink.png", tmp_path / "symlink.png"):
        with pytest.raises(InputImageError, match="overwrite an input"):
            write.write_image(target, 1 - img.rgb, protected=[source])
    assert _digest(source) == digest
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    write.write_image(tmp_path / "in_x4.png", img.rgb, protected=[source])  # a different name is fine


@settings(max_examples=25, deadline=None)
@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3)), elements=st.floats(0, 1, width=32)
    ),
    st.sampled_from([8, 16]),
)
def test_png_round_trip_property(rgb: np.ndarray, bits: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        back = read.read_image(write.write_image(Path(folder) / "p.png", rgb, bit_depth=bits))
    step = (1 << bits) - 1
    assert back.bit_depth == bits
    assert np.abs(back.rgb - rgb).max() <= 0.5 / step + 1e-6


def test_16bit_write_without_opencv_falls_back_to_8bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "import_cv2", lambda: None)
    with pytest.warns(RuntimeWarning, match="8-bit"):
        out = write.write_image(tmp_path / "o.png", np.full((2, 2, 3), 0.3, np.float32), bit_depth=16)
    with Image.open(out) as written:
        assert written.mode == "RGB" and written.tile[0][3] == "RGB"


# --------------------------------------------------------------------------------------------- naming


def test_resolve_extension() -> None:
    assert naming.resolve_extension("png", "JPEG", False) == "png"
    assert naming.resolve_extension("jpg", "PNG", False) == "jpg"
    assert naming.resolve_extension("webp", "PNG", True) == "webp"
    assert naming.resolve_extension("tif", "PNG", True) == "tif"
    assert naming.resolve_extension("jpg", "PNG", True) == "png"
    assert naming.resolve_extension("bmp", "PNG", True) == "png"
    assert naming.resolve_extension("same", "JPEG", False) == "jpg"
    assert naming.resolve_extension("same", ".JPEG", False) == "jpeg"
    assert naming.resolve_extension("same", "JPEG", True) == "png"
    assert naming.resolve_extension("same", "WEBP", True) == "webp"
    assert naming.resolve_extension("same", "TIFF", False) == "tif"
    assert naming.resolve_extension("same", "jpg", False) == "jpg"
    assert naming.resolve_extension("same", "GIF", False) == "png"
    assert naming.resolve_extension(".PNG", "JPEG", False) == "png"
    with pytest.raises(StableSRError, match="unsupported output format"):
        naming.resolve_extension("gif", "PNG", False)


def test_output_path() -> None:
    assert naming.output_path(Path("in/cat.jpg"), Path("out")) == Path("out/cat.png")
    assert naming.output_path(Path("in/cat.jpg"), Path("out"), suffix="_x4", ext=".webp") == Path("out/cat_x4.webp")


def test_collect_inputs(tmp_path: Path) -> None:
    for name in ("b.png", "A.JPG", "c.TiFF", "d.webp", "e.bmp", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty").mkdir()
    paths, errors = naming.collect_inputs([str(tmp_path)])
    assert [p.name for p in paths] == ["A.JPG", "b.png", "c.TiFF", "d.webp", "e.bmp"] and errors == []

    paths, errors = naming.collect_inputs(
        [
            str(tmp_path / "*.png"),
            str(tmp_path / "b.png"),
            str(tmp_path),
            str(tmp_path / "notes.txt"),
            str(tmp_path / "*.gif"),
            str(tmp_path / "missing.png"),
            str(tmp_path / "empty"),
        ]
    )
    assert [p.name for p in paths] == ["b.png", "A.JPG", "c.TiFF", "d.webp", "e.bmp", "notes.txt"]
    assert errors == [
        f"{tmp_path / '*.gif'}: no matching files",
        f"{tmp_path / 'missing.png'}: no such file or directory",
        f"{tmp_path / 'empty'}: no image files in this directory",
    ]


def test_collect_inputs_real_folder(real_lr: Path) -> None:
    paths, errors = naming.collect_inputs([str(real_lr), str(real_lr / "faces" / "*.png")])
    assert errors == [] and len(paths) == 14 and paths == sorted(paths[:10]) + paths[10:]


def test_mpo_first_frame_is_read(tmp_path: Path) -> None:
    # Phone JPEGs are often MPO with a preview/depth frame: not an animation, read the photo.
    path = tmp_path / "phone.jpg"
    red, blue = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    red.save(path, format="MPO", save_all=True, append_images=[blue])
    img = read.read_image(path)
    assert img.format == "MPO" and img.rgb[..., 0].mean() > 0.9


def test_16bit_grey_alpha_written_with_full_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 65536, (4, 5)).astype(np.float32) / 65535
    alpha = rng.integers(0, 65536, (4, 5)).astype(np.float32) / 65535
    back = read.read_image(write.write_image(tmp_path / "la.png", grey, alpha=alpha, is_grey=True, bit_depth=16))
    assert back.bit_depth == 16  # OpenCV cannot write grey+alpha, so the file is RGBA with equal channels
    assert np.abs(back.rgb[..., 0] - grey).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(back.alpha - alpha).max() <= 0.5 / 65535 + 1e-7
