"""NIQE (Mittal, Soundararajan, Bovik 2013) as computed by BasicSR's ``calculate_niqe``.

The protocol, step by step (the same as BasicSR, which reproduces the official MATLAB release):

1. Y channel of the RGB image in ``[0, 255]`` (BT.601, see :mod:`.fidelity`), then ``crop_border``
   (default 0), then rounding to integers (as MATLAB sees an 8-bit Y image).
2. The image is cut to whole 96x96 blocks (no overlap); smaller images have no NIQE.
3. At two scales (full, then half via MATLAB-style antialiased bicubic ``imresize``): local mean
   and deviation with the 7x7 Gaussian window of the pristine model (edge-replicating borders),
   normalised coefficients ``(I - mu) / (sigma + 1)``, and per block 18 AGGD/GGD features
   (shape and spread of the coefficients, and of their products with the four neighbours).
4. A Gaussian fitted to the block features is compared to the pristine model
   (``mu_pris_param``, ``cov_pris_param`` from BasicSR's ``niqe_pris_params.npz``):
   ``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu))``. Lower is better.

Intermediate images are float32, as in BasicSR. That matters: in smooth regions the local variance
``E[x^2] - mu^2`` cancels in float32, and a float64 pipeline gives NIQE values up to ~0.08 away from
BasicSR's (e.g. Set5 bird); details of the resampler's precision move it by < 0.001.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .fidelity import crop, rgb_to_y
from .imresize import imresize

__all__ = ["BLOCK", "PristineModel", "default_params_path", "load_pristine", "niqe", "niqe_of_y"]

BLOCK = 96
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
#: Where the pristine parameters are looked for when no path is given.
PARAMS_ENV = "STABLESR_NIQE_PARAMS"


class PristineModel:
    """The multivariate Gaussian of pristine-image features, plus the smoothing window."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray, window: np.ndarray) -> None:
        self.mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.window = np.asarray(window, dtype=np.float64)
        if self.mu.shape != (36,) or self.cov.shape != (36, 36) or self.window.ndim != 2:
            raise ValueError("NIQE parameters must hold mu (36), cov (36x36) and a 2-D gaussian_window")


def default_params_path() -> Path | None:
    """``$STABLESR_NIQE_PARAMS``, else ``niqe_pris_params.npz`` next to this module or in ``../shared/data/metrics``."""
    env = os.environ.get(PARAMS_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for cand in (here.with_name("niqe_pris_params.npz"),
                 *(p / "shared" / "data" / "metrics" / "niqe_pris_params.npz" for p in here.parents)):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=4)
def load_pristine(path: str | os.PathLike[str] | None = None) -> PristineModel:
    """Load ``mu_pris_param``, ``cov_pris_param`` and ``gaussian_window`` from an ``.npz`` (no pickles)."""
    p = Path(path) if path is not None else default_params_path()
    if p is None or not p.is_file():
        raise FileNotFoundError(
            f"NIQE pristine parameters not found ({p or 'niqe_pris_params.npz'}); set {PARAMS_ENV} to BasicSR's "
            "niqe_pris_params.npz")
    with np.load(p, allow_pickle=False) as z:
        return PristineModel(z["mu_pris_param"], z["cov_pris_param"], z["gaussian_window"])


@lru_cache(maxsize=1)
def _ggd_ratio_table() -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import gamma

    # Shape parameters 0.2..10 in steps of 0.001 and the moment ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)).
    shapes = np.arange(0.2, 10.001, 0.001)
    inv = 1.0 / shapes
    return shapes, gamma(2 * inv) ** 2 / (gamma(inv) * gamma(3 * inv))


def _aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Shape and left/right scales of an asymmetric generalised Gaussian, by moment matching on the table."""
    from scipy.special import gamma

    v = values.ravel()
    left = np.sqrt(np.mean(v[v < 0] ** 2))
    right = np.sqrt(np.mean(v[v > 0] ** 2))
    g = left / right
    r = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
    r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shapes, ratios = _ggd_ratio_table()
    a = shapes[np.argmin((ratios - r_norm) ** 2)]
    spread = np.sqrt(gamma(1 / a) / gamma(3 / a))
    return float(a), float(left * spread), float(right * spread)


def _block_features(block: np.ndarray) -> list[float]:
    from scipy.special import gamma

    a, bl, br = _aggd(block)
    feats = [a, (bl + br) / 2]
    for shift in _SHIFTS:
        a, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        feats += [a, (br - bl) * gamma(2 / a) / gamma(1 / a), bl, br]
    return feats


def niqe_of_y(y: np.ndarray, model: PristineModel | None = None) -> float:
    """NIQE of a 2-D luma image in ``[0, 255]`` (already cropped and rounded)."""
    from scipy.ndimage import convolve

    model = model or load_pristine()
    h, w = y.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh * nw < 2:  # one block gives no covariance (BasicSR fails there too)
        raise ValueError(f"NIQE needs at least two whole {BLOCK}x{BLOCK} blocks, got {w}x{h} pixels")
    img = y[: nh * BLOCK, : nw * BLOCK].astype(np.float32)
    per_scale = []
    for scale in (1, 2):
        mu = convolve(img, model.window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(np.square(img), model.window, mode="nearest") - np.square(mu)))
        coeffs = (img - mu) / (sigma + 1)
        size = BLOCK // scale
        per_scale.append(np.array([
            _block_features(coeffs[bh * size:(bh + 1) * size, bw * size:(bw + 1) * size])
            for bw in range(nw) for bh in range(nh)
        ]))
        if scale == 1:
            img = (imresize(img / np.float32(255.0), 0.5).astype(np.float32) * np.float32(255.0))
    feats = np.concatenate(per_scale, axis=1)
    mu = np.nanmean(feats, axis=0)
    finite = feats[~np.isnan(feats).any(axis=1)]
    if len(finite) < 2:
        raise ValueError("NIQE is undefined: fewer than two blocks have finite features (flat image?)")
    cov = np.cov(finite, rowvar=False)
    d = model.mu - mu
    return float(np.sqrt(d @ np.linalg.pinv((model.cov + cov) / 2) @ d))


def niqe(img: np.ndarray, crop_border: int = 0, model: PristineModel | None = None) -> float:
    """NIQE of an ``HxWx3`` RGB (or ``HxWx1`` grey) image in ``[0, 255]``; lower is better.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> noisy = rng.uniform(0, 255, (192, 192, 3))
        >>> niqe(noisy) > 10  # doctest: +SKIP
        True
    """
    y = rgb_to_y(img.astype(np.float32).astype(np.float64) if img.ndim == 3 else img[..., None])
    y = crop(y, crop_border)[..., 0]
    return niqe_of_y(np.round(y), model)
