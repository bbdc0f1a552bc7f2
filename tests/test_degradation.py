"""Degradation core: kernels against closed forms, each stage, noise levels, JPEG vs Pillow, USM vs
OpenCV, crop vs OpenCV borders, determinism, presets, on real photos from ../shared/data."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stablesr.degradation import (
    CropParams,
    DegradationConfig,
    DegradationConfigError,
    DegradationParams,
    KernelSpec,
    NoiseSpec,
    RealESRGANParams,
    ResizeSpec,
    add_gaussian_noise,
    add_poisson_noise,
    circular_lowpass_kernel,
    crop_image,
    degrade,
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    jpeg_compress,
    plateau_kernel,
    random_crop,
    resize,
    sample_params,
    target_image,
    training_input,
    usm_sharpen,
)

MIXED = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


def load(path: Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).unsqueeze(0)


@pytest.fixture(scope="module")
def photo(data_dir: Path) -> torch.Tensor:
    """A 256x256 crop of a real photo (CBSD68)."""
    return load(data_dir / "hr" / "bsd68" / "101087.png")[..., 100:356, 20:276].contiguous()


# ----------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("kind", MIXED + ("sinc",))
def test_kernels_sum_to_one_and_are_point_symmetric(kind: str) -> None:
    k = KernelSpec(kind, 15, sigma_x=2.0, sigma_y=0.7, theta=0.6, beta=1.4, omega_c=1.3).build()
    assert k.shape == (15, 15)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(k, k.flip(0).flip(1), rtol=0, atol=1e-15)
    if "aniso" not in kind:  # isotropic kernels are also mirror- and transpose-symmetric
        torch.testing.assert_close(k, k.T, rtol=0, atol=1e-15)
        torch.testing.assert_close(k, k.flip(0), rtol=0, atol=1e-15)


def test_gaussian_matches_closed_form() -> None:
    ax = np.arange(-10, 11, dtype=np.float64)
    g = np.exp(-(ax**2) / (2 * 1.7**2))
    iso = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(gaussian_kernel(21, 1.7).numpy(), iso, rtol=1e-12)
    # anisotropic: the bivariate normal density with the rotated covariance
    sx, sy, th = 3.0, 1.2, 0.4
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    cov = rot @ np.diag([sx**2, sy**2]) @ rot.T
    xx, yy = np.meshgrid(ax, ax)
    pts = np.stack([xx, yy], -1)
    dens = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, np.linalg.inv(cov), pts))
    np.testing.assert_allclose(gaussian_kernel(21, sx, sy, th).numpy(), dens / dens.sum(), rtol=1e-10)


def _principal_angle(k: torch.Tensor) -> float:
    n = k.shape[0]
    ax = torch.arange(n, dtype=torch.float64) - n // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    cxx, cyy, cxy = (k * xx * xx).sum(), (k * yy * yy).sum(), (k * xx * yy).sum()
    return 0.5 * math.atan2(2 * float(cxy), float(cxx - cyy))


@pytest.mark.parametrize("kind", ["aniso", "generalized_aniso", "plateau_aniso"])
@pytest.mark.parametrize("theta", [0.0, 0.5, math.pi / 2, -1.0])
def test_rotation_moves_the_long_axis(kind: str, theta: float) -> None:
    k = KernelSpec(kind, 21, sigma_x=3.0, sigma_y=1.0, theta=theta, beta=1.2).build()
    angle = _principal_angle(k)
    diff = (angle - theta + math.pi / 2) % math.pi - math.pi / 2  # axes are defined modulo pi
    assert abs(diff) < 0.05


def test_generalized_gaussian_shape_parameter() -> None:
    # official parametrisation exp(-d2**beta / 2): beta = 1 (exponent 2 in |x|**p terms) is the Gaussian
    torch.testing.assert_close(generalized_gaussian_kernel(21, 2.0, 1.0, 0.3, beta=1.0), gaussian_kernel(21, 2.0, 1.0, 0.3))
    flat = generalized_gaussian_kernel(21, 2.0, beta=2.0)
    peaky = generalized_gaussian_kernel(21, 2.0, beta=0.5)
    gauss = gaussian_kernel(21, 2.0)
    assert peaky[10, 0] > gauss[10, 0] > flat[10, 0]  # beta < 1: heavier tails; beta > 1: lighter
    # closed form along an axis: k(0, dx) / k(0, 0) = exp(-((dx/sigma)^2)^beta / 2)
    for k, beta in ((flat, 2.0), (peaky, 0.5)):
        for dx in (1, 3, 7):
            ratio = math.exp(-0.5 * ((dx / 2.0) ** 2) ** beta)
            assert float(k[10, 10 + dx] / k[10, 10]) == pytest.approx(ratio, rel=1e-12)


def test_plateau_closed_form() -> None:
    k = plateau_kernel(21, 1.5, beta=1.3)
    for dx in (1, 2, 5):
        d2 = (dx / 1.5) ** 2
        assert float(k[10, 10 + dx] / k[10, 10]) == pytest.approx(1 / (1 + d2**1.3), rel=1e-12)


@pytest.mark.parametrize("omega_c", [math.pi / 2, 2.2])
def test_sinc_frequency_response_cuts_off_at_omega_c(omega_c: float) -> None:
    k = circular_lowpass_kernel(21, omega_c)
    n = 256
    resp = torch.fft.fft2(torch.nn.functional.pad(k, (0, n - 21, 0, n - 21))).abs()
    f = torch.fft.fftfreq(n, dtype=torch.float64) * 2 * math.pi
    radius = torch.sqrt(f.reshape(-1, 1) ** 2 + f.reshape(1, -1) ** 2)
    assert float(resp[radius < 0.7 * omega_c].mean()) > 0.9
    stop = (radius > 1.3 * omega_c) & (radius < math.pi)
    assert float(resp[stop].mean()) < 0.1
    # the half-amplitude contour sits at the cutoff
    band = (resp > 0.4) & (resp < 0.6) & (radius < math.pi)
    assert float(radius[band].mean()) == pytest.approx(omega_c, abs=0.12)


def test_sinc_cutoff_ranges_by_kernel_size() -> None:
    cfg = DegradationConfig.from_preset("realesrgan")
    cfg = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, kernel=dataclasses.replace(
        cfg.stage1.kernel, sinc_prob=1.0)))
    params = sample_params(cfg, 400, torch.Generator().manual_seed(3))
    small = [p.kernel1.omega_c for p in params.images if p.kernel1.size < 13]
    large = [p.kernel1.omega_c for p in params.images if p.kernel1.size >= 13]
    assert all(p.kernel1.kind == "sinc" for p in params.images)
    assert min(small) >= math.pi / 3 and max(small) <= math.pi
    assert min(large) >= math.pi / 5 and min(large) < math.pi / 3 - 0.1
    assert {p.kernel1.size for p in params.images} == set(range(7, 22, 2))
    finals = [p.final_kernel for p in params.images]
    share = sum(k.kind == "sinc" for k in finals) / len(finals)
    assert share == pytest.approx(0.8, abs=0.07)
    assert min(k.omega_c for k in finals if k.kind == "sinc") >= math.pi / 3


def test_kernel_type_frequencies_and_beta_split() -> None:
    cfg = DegradationConfig.from_preset("realesrgan")
    params = sample_params(cfg, 3000, torch.Generator().manual_seed(5))
    kinds = [p.kernel1.kind for p in params.images]
    n_mixed = sum(k != "sinc" for k in kinds)
    for kind, prob in zip(MIXED, cfg.stage1.kernel.kernel_prob):
        assert kinds.count(kind) / n_mixed == pytest.approx(prob, abs=0.03)
    assert kinds.count("sinc") / len(kinds) == pytest.approx(0.1, abs=0.02)
    plateau = [p.kernel1.beta for p in params.images if p.kernel1.kind.startswith("plateau")]
    assert sum(b == 1.0 for b in plateau) / len(plateau) == pytest.approx(0.5, abs=0.1)  # U(1, 1) half the time
    sig2 = [p.kernel2.sigma_x for p in params.images if p.kernel2.kind != "sinc"]
    assert 0.2 <= min(sig2) and max(sig2) <= 1.0


# ------------------------------------------------------------------------------------------- stages


def _identity_params(**changes: object) -> RealESRGANParams:
    ident = KernelSpec("identity", 1)
    keep = ResizeSpec("keep", 1.0, "area")
    quiet = NoiseSpec("gaussian", 0.0, False)
    base = RealESRGANParams(ident, keep, quiet, 100.0, False, ident, keep, quiet, True, "area", ident, 100.0,
                            False, 1)
    return dataclasses.replace(base, **changes)


def _run(gt: torch.Tensor, p: RealESRGANParams) -> torch.Tensor:
    return degrade(gt, DegradationParams(DegradationConfig.from_preset("realesrgan"), (p,)))


def test_all_stages_off_is_a_plain_downscale(photo: torch.Tensor) -> None:
    lr = _run(photo, _identity_params())
    # quality 100 leaves only the 4:2:0 chroma subsampling of the two JPEG steps
    area = torch.nn.functional.interpolate(jpeg_compress(photo, 100.0), size=(64, 64), mode="area")
    torch.testing.assert_close(lr, jpeg_compress(area, 100.0), atol=2e-5, rtol=0)


def test_each_stage_changes_the_output_only_when_on(photo: torch.Tensor) -> None:
    off = _run(photo, _identity_params())
    blur = KernelSpec("iso", 21, sigma_x=1.5, sigma_y=1.5)
    variants = {
        "blur1": {"kernel1": blur},
        "resize1": {"resize1": ResizeSpec("down", 0.35, "bicubic")},
        "noise1": {"noise1": NoiseSpec("gaussian", 10.0, False)},
        "jpeg1": {"jpeg1": 40.0},
        "blur2": {"blur2": True, "kernel2": blur},
        "resize2": {"resize2": ResizeSpec("up", 1.2, "bicubic")},
        "noise2": {"noise2": NoiseSpec("poisson", 1.0, True)},
        "sinc": {"final_kernel": KernelSpec("sinc", 11, omega_c=1.2)},
        "jpeg2": {"jpeg2": 40.0},
    }
    for name, change in variants.items():
        on = _run(photo, _identity_params(**change))
        assert psnr(on, off) < 45, name
    # blur2 with its flag off does nothing even with a kernel set
    torch.testing.assert_close(_run(photo, _identity_params(kernel2=blur)), off, atol=0, rtol=0)


def test_stage_probabilities_one_and_zero() -> None:
    base = DegradationConfig.from_preset("realesrgan")
    gen = torch.Generator().manual_seed(0)

    def stage2(**kw: object) -> DegradationConfig:
        return dataclasses.replace(base, stage2=dataclasses.replace(base.stage2, **kw))

    assert all(p.blur2 for p in sample_params(stage2(blur_prob=1.0), 50, gen).images)
    assert not any(p.blur2 for p in sample_params(stage2(blur_prob=0.0), 50, gen).images)
    assert all(p.noise2.kind == "gaussian" for p in sample_params(stage2(gaussian_noise_prob=1.0), 50, gen).images)
    assert all(p.noise2.kind == "poisson" for p in sample_params(stage2(gaussian_noise_prob=0.0), 50, gen).images)
    assert all(p.noise2.gray for p in sample_params(stage2(gray_noise_prob=1.0), 50, gen).images)
    assert all(p.resize2.direction == "keep" for p in sample_params(stage2(resize_prob=(0, 0, 1)), 50, gen).images)
    no_final = dataclasses.replace(base, final_sinc_prob=0.0)
    assert all(p.final_kernel.kind == "identity" for p in sample_params(no_final, 50, gen).images)
    everything = dataclasses.replace(base, no_degradation_prob=1.0)
    assert all(p.no_degradation for p in sample_params(everything, 5, gen).images)


def test_official_draw_frequencies() -> None:
    params = sample_params(DegradationConfig.from_preset("realesrgan"), 4000, torch.Generator().manual_seed(9))
    ims = params.images
    share = lambda flags: sum(flags) / len(ims)
    assert share(p.resize1.direction == "up" for p in ims) == pytest.approx(0.2, abs=0.025)
    assert share(p.resize1.direction == "down" for p in ims) == pytest.approx(0.7, abs=0.025)
    assert share(p.resize2.direction == "keep" for p in ims) == pytest.approx(0.3, abs=0.025)
    assert share(p.noise1.kind == "gaussian" for p in ims) == pytest.approx(0.5, abs=0.03)
    assert share(p.noise1.gray for p in ims) == pytest.approx(0.4, abs=0.03)
    assert share(p.blur2 for p in ims) == pytest.approx(0.5, abs=0.03)
    assert share(p.sinc_first for p in ims) == pytest.approx(0.5, abs=0.03)
    assert share(p.resize1.mode == "area" for p in ims) == pytest.approx(1 / 3, abs=0.03)
    ups = [p.resize1.scale for p in ims if p.resize1.direction == "up"]
    downs = [p.resize2.scale for p in ims if p.resize2.direction == "down"]
    assert 1 <= min(ups) and max(ups) <= 1.5 and 0.6 <= min(downs) and max(downs) <= 1
    sig = [p.noise2.amount for p in ims if p.noise2.kind == "gaussian"]
    assert 1 <= min(sig) and max(sig) <= 12
    q = [p.jpeg1 for p in ims]
    assert 60 <= min(q) and max(q) <= 95 and any(v != int(v) for v in q)  # continuous quality, per image
    assert max(p.jpeg2 for p in ims) > 99


# -------------------------------------------------------------------------------------------- noise


def test_gaussian_noise_sigma_matches() -> None:
    flat = torch.full((2, 3, 256, 256), 0.5)
    gen = torch.Generator().manual_seed(0)
    out = add_gaussian_noise(flat, torch.tensor([4.0, 12.0]), [False, True], gen)
    noise = (out - flat) * 255
    assert float(noise[0].std()) == pytest.approx(4.0, rel=0.02)
    assert float(noise[1].std()) == pytest.approx(12.0, rel=0.02)
    torch.testing.assert_close(noise[1, 0], noise[1, 2])  # grey: one plane for all channels
    assert float((noise[0, 0] - noise[0, 1]).abs().mean()) > 1  # colour: independent channels
    assert float(torch.corrcoef(torch.stack([noise[0, 0].flatten(), noise[0, 1].flatten()]))[0, 1]) < 0.02


def test_poisson_noise_variance_matches() -> None:
    gen = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 256, (1, 3, 256, 256), generator=gen).float() / 255
    levels = levels.clamp(80 / 255, 180 / 255)  # keep clamping out of the measurement
    for scale in (0.5, 1.5):
        out = add_poisson_noise(levels, scale, False, gen)
        var = float(((out - levels) ** 2).mean())
        vals = 2 ** math.ceil(math.log2(len(torch.unique(levels))))  # 101 distinct values -> 128 levels
        expected = float(levels.mean()) / vals * scale**2
        assert var == pytest.approx(expected, rel=0.05)
    out = add_poisson_noise(levels, 1.0, True, gen)
    inside = ((out > 0) & (out < 1)).all(1)  # away from clamping, every channel got the same noise
    torch.testing.assert_close((out - levels)[:, 0][inside], (out - levels)[:, 1][inside])


# --------------------------------------------------------------------------------------------- JPEG


@pytest.mark.parametrize("quality", [30, 50, 75, 90])
def test_torch_jpeg_matches_pillow(photo: torch.Tensor, quality: int) -> None:
    rgb = (photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)  # libjpeg, 4:2:0
    pil = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    ours = jpeg_compress(x, quality, style="libjpeg")
    official = jpeg_compress(x, float(quality))
    # same codec up to the decoder's chroma upsampling and integer DCT: within 40 dB of Pillow's pixels
    assert psnr(ours, pil) > 40
    # the official DiffJPEG convention (transposed, unrounded tables) is the same strength, other pixels
    assert psnr(official, pil) > 31
    assert abs(psnr(ours, x) - psnr(pil, x)) < 0.5
    assert abs(psnr(official, x) - psnr(pil, x)) < 1.0


def test_jpeg_blocks_and_per_image_quality(photo: torch.Tensor) -> None:
    batch = photo.repeat(2, 1, 1, 1)
    out = jpeg_compress(batch, torch.tensor([20.0, 95.0]))
    assert psnr(out[0:1], photo) < psnr(out[1:2], photo) - 8
    torch.testing.assert_close(out[1:2], jpeg_compress(photo, 95.0))  # images are independent
    smooth = torch.linspace(0, 1, 64).reshape(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    coded = jpeg_compress(smooth, 10.0)
    d = (coded[..., 1:] - coded[..., :-1]).abs().mean(dim=(0, 1, 2))
    assert float(d[7::8].mean()) > 2 * float(d[torch.arange(63) % 8 != 7].mean())  # 8x8 block edges
    grey = photo.mean(1, keepdim=True).expand(1, 3, -1, -1).contiguous()
    torch.testing.assert_close(jpeg_compress(grey, 100.0), grey, atol=2e-4, rtol=0)  # nothing quantised


# ---------------------------------------------------------------------------------------- USM, crop


def test_usm_matches_direct_opencv_computation(photo: torch.Tensor) -> None:
    cv2 = pytest.importorskip("cv2")
    img = photo[0].permute(1, 2, 0).numpy().astype(np.float64)
    blur = cv2.GaussianBlur(img, (51, 51), 0)  # sigma 8 from OpenCV's rule, BORDER_REFLECT_101
    residual = img - blur
    mask = (np.abs(residual) * 255 > 10).astype(np.float64)
    soft = cv2.GaussianBlur(mask, (51, 51), 0)
    expected = soft * np.clip(img + 0.5 * residual, 0, 1) + (1 - soft) * img
    ours = usm_sharpen(photo.double())[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert psnr(usm_sharpen(photo), photo) < 40  # it does sharpen


def test_crop_pads_like_opencv_reflect101(photo: torch.Tensor) -> None:
    cv2 = pytest.importorskip("cv2")
    small = photo[..., :50, :90]
    crop = crop_image(small, 128, CropParams(flip=True, top=0.0, left=0.0))
    flipped = small.flip(-1)[0].permute(1, 2, 0).numpy()
    expected = cv2.copyMakeBorder(flipped, 0, 78, 0, 38, cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(crop[0].permute(1, 2, 0).numpy(), expected)
    big = crop_image(photo, 100, CropParams(flip=False, top=1.0 - 1e-9, left=0.0))
    torch.testing.assert_close(big, photo[..., 156:256, 0:100], atol=0, rtol=0)
    crops, used = random_crop(photo.repeat(3, 1, 1, 1), 64, torch.Generator().manual_seed(0))
    assert crops.shape == (3, 3, 64, 64) and len(used) == 3


def test_filter2d_and_resize_follow_interpolate(photo: torch.Tensor) -> None:
    k = gaussian_kernel(7, 1.0)
    padded = torch.nn.functional.pad(k, (7, 7, 7, 7))  # zero padding to 21 changes nothing
    torch.testing.assert_close(filter2d(photo, k), filter2d(photo, padded))
    out = resize(photo, "bicubic", scale=0.37)
    assert out.shape[-2:] == (94, 94)
    torch.testing.assert_close(out, torch.nn.functional.interpolate(photo, scale_factor=0.37, mode="bicubic"))


# ------------------------------------------------------------------------------ whole pipeline, presets


@pytest.mark.parametrize("preset", ["realesrgan", "realesrgan-768v", "face", "bicubic"])
def test_presets_shapes_ranges_no_nans(photo: torch.Tensor, preset: str) -> None:
    cfg = DegradationConfig.from_preset(preset)
    batch = photo.repeat(3, 1, 1, 1)
    params = sample_params(cfg, 3, torch.Generator().manual_seed(11))
    lr = degrade(batch, params)
    assert lr.shape == (3, 3, 64, 64) and lr.dtype == torch.float32
    assert torch.isfinite(lr).all() and lr.min() >= 0 and lr.max() <= 1
    assert target_image(batch, params).shape == batch.shape
    assert training_input(batch, lr, params).shape == batch.shape


def test_determinism_and_batch_independence(photo: torch.Tensor) -> None:
    cfg = DegradationConfig.from_preset("realesrgan")
    batch = torch.cat([photo, photo.flip(-1), photo.flip(-2)])
    p1 = sample_params(cfg, 3, torch.Generator().manual_seed(7))
    p2 = sample_params(cfg, 3, torch.Generator().manual_seed(7))
    assert p1 == p2
    a, b = degrade(batch, p1), degrade(batch, p2)
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(7)
    singles = DegradationParams.concat([sample_params(cfg, 1, gen) for _ in range(3)])
    assert singles == p1
    alone = torch.cat([degrade(batch[i : i + 1], p1[i]) for i in range(3)])
    assert torch.equal(alone, a)
    other = degrade(batch, sample_params(cfg, 3, torch.Generator().manual_seed(8)))
    assert not torch.equal(other, a)


def test_bicubic_preset_matches_matlab_style_lr(data_dir: Path) -> None:
    folder = data_dir / "paired" / "imagenet_bicubic_x4"
    name = min((folder / "gt").iterdir()).name
    gt, lq = load(folder / "gt" / name), load(folder / "lq" / name)
    cfg = DegradationConfig.from_preset("bicubic")
    lr = degrade(gt, sample_params(cfg, 1, torch.Generator()))
    assert lr.shape == lq.shape
    assert psnr(lr, lq) > 38


def test_face_preset_grey_target(photo: torch.Tensor) -> None:
    cfg = DegradationConfig.from_preset("face")
    cfg = dataclasses.replace(cfg, face=dataclasses.replace(cfg.face, gray_prob=1.0))
    params = sample_params(cfg, 1, torch.Generator().manual_seed(2))
    lr, gt = degrade(photo, params), target_image(photo, params)
    torch.testing.assert_close(lr[:, 0], lr[:, 1])
    torch.testing.assert_close(gt[:, 0], gt[:, 2])
    assert torch.equal((lr * 255).round(), lr * 255)  # the face pipeline rounds to 8 bits


def test_config_yaml_round_trip_and_errors(tmp_path: Path) -> None:
    import yaml

    cfg = DegradationConfig.from_preset("realesrgan-768v")
    assert cfg.stage2.jpeg_range == (60.0, 95.0) and not cfg.use_usm
    official = DegradationConfig.from_preset("realesrgan")
    assert official.stage1.resize_prob == (0.2, 0.7, 0.1) and official.stage2.resize_range == (0.6, 1.2)
    assert official.stage2.kernel.blur_sigma == (0.2, 1.0) and official.final_sinc_prob == 0.8
    path = tmp_path / "deg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert DegradationConfig.from_yaml(path) == cfg
    path.write_text("preset: realesrgan\nstage1:\n  noise_range: [1, 5]\n")
    assert DegradationConfig.from_yaml(path).stage1.noise_range == (1.0, 5.0)
    with pytest.raises(DegradationConfigError, match="unknown key 'nosie_range'"):
        DegradationConfig.from_dict({"stage1": {"nosie_range": [1, 5]}})
    with pytest.raises(DegradationConfigError, match="jpeg_range"):
        DegradationConfig.from_dict({"stage2": {"jpeg_range": [90, 60]}})
    with pytest.raises(DegradationConfigError, match="unknown degradation preset"):
        DegradationConfig.from_preset("nope")


@pytest.mark.slow
def test_severity_statistics_stay_in_the_official_band(data_dir: Path) -> None:
    """A guard on the whole pipeline: the mean PSNR of LR vs bicubic GT over real 512 crops
    (26.5 dB, std 2.4 over 600 pairs, see benchmarks/degradation.py --stats) stays within 4 standard errors."""
    photos = [load(p) for p in (data_dir / "hr" / "urban100").glob("*.png")]
    photos += [load(p) for p in (data_dir / "hr" / "sun_hays80").glob("*.jpg")]
    cfg = DegradationConfig.from_preset("realesrgan")
    gen = torch.Generator().manual_seed(123)
    values = []
    for i in range(12):
        crops, _ = random_crop(photos[i % len(photos)], 512, gen)
        lr = degrade(crops, sample_params(cfg, 1, gen))
        ref = torch.nn.functional.interpolate(crops, size=(128, 128), mode="bicubic", antialias=True).clamp(0, 1)
        values.append(psnr(lr, ref))
    mean = sum(values) / len(values)
    assert 24.0 < mean < 29.0
    assert max(values) - min(values) > 3  # the degradations vary from mild to severe
