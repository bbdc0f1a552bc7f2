"""Metrics that need downloaded network weights: LPIPS, DISTS, FID (well-kept libraries) and pyiqa's MUSIQ/MANIQA/CLIP-IQA.

Nothing here downloads anything: each builder first checks that its package imports and that its
weights are already in the local cache, and otherwise raises :class:`MetricUnavailable` with the
reason and the command that would fetch them. All heavy imports happen inside the builders.
pyiqa is an opt-in extra (``pip install pyiqa``): its licence is non-commercial.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricUnavailable", "build_dists", "build_fid", "build_lpips", "build_pyiqa"]


# Part of the checkpoint file names pyiqa downloads for each metric (e.g. musiq_koniq_ckpt-*.pth).
_PYIQA_WEIGHT_KEYS = {"musiq": "musiq", "maniqa": "maniqa", "clipiqa": "clip"}


class MetricUnavailable(Exception):
    """A metric cannot run here; ``str()`` is the one-line reason including how to fetch what is missing."""


def _import(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken dependency failing in any way at import
        raise MetricUnavailable(f"needs the '{module}' package ({type(exc).__name__}: {exc}); install: {install}") from None


def _torch_hub_file(name: str, fetch: str) -> Path:
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        raise MetricUnavailable(f"weights {path} are not downloaded; fetch them once online with: {fetch}")
    return path


def _to_tensor(img: np.ndarray, device: str) -> Any:
    import torch

    rgb = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1) / 255.0)).float()[None].to(device)


def build_lpips(device: str = "cpu") -> Any:
    """LPIPS (AlexNet, v0.1) from the ``lpips`` package; returns ``f(pred, gt) -> float`` on ``[0, 255]`` arrays."""
    import torch

    _import("torchvision", "pip install torchvision (matching your torch build)")
    _torch_hub_file("alexnet-owt-7be5be79.pth",
                    "python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\"")
    lpips = _import("lpips", "pip install lpips")
    net = lpips.LPIPS(net="alex", version="0.1", verbose=False).to(device).eval()

    def score(pred: np.ndarray, gt: np.ndarray) -> float:
        with torch.no_grad():
            return float(net(_to_tensor(pred, device), _to_tensor(gt, device), normalize=True).item())

    return score


def build_dists(device: str = "cpu") -> Any:
    """DISTS from torchmetrics (its bundled DISTS weights plus torchvision's VGG16)."""
    import torch

    _import("torchvision", "pip install torchvision (matching your torch build)")
    _torch_hub_file("vgg16-397923af.pth",
                    "python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"")
    mod = _import("torchmetrics.functional.image.dists", "pip install 'torchmetrics>=1.7'")
    net = mod.DISTSNetwork().to(device).eval()  # built once; the functional API rebuilds it on every call

    def score(pred: np.ndarray, gt: np.ndarray) -> float:
        with torch.no_grad():
            return float(net(_to_tensor(pred, device), _to_tensor(gt, device)).reshape(-1)[0].item())

    return score


class FolderFID:
    """FID between the prediction folder and the GT folder, accumulated image by image (torchmetrics)."""

    def __init__(self, device: str = "cpu") -> None:
        _import("torch_fidelity", "pip install torch-fidelity")
        _torch_hub_file("weights-inception-2015-12-05-6726825d.pth",
                        "python -c \"from torchmetrics.image.fid import FrechetInceptionDistance as F; F()\"")
        fid = _import("torchmetrics.image.fid", "pip install torchmetrics torch-fidelity")
        self.device = device
        self.metric = fid.FrechetInceptionDistance(feature=2048, normalize=True).to(device)
        self.count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.metric.update(_to_tensor(gt, self.device), real=True)
        self.metric.update(_to_tensor(pred, self.device), real=False)
        self.count += 1

    def compute(self) -> float:
        if self.count < 2:
            raise ValueError("FID needs at least two images")
        return float(self.metric.compute().item())


def build_fid(device: str = "cpu") -> FolderFID:
    """FID over the folder (Inception-v3 pool features, torch-fidelity's port of the TF weights)."""
    return FolderFID(device)


def _pyiqa_caches() -> list[Path]:
    """Where pyiqa keeps checkpoints: torch hub's ``pyiqa/`` (older releases) or its Hugging Face weights repo."""
    import torch

    caches = [Path(torch.hub.get_dir()) / "pyiqa"]
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        caches.append(Path(HF_HUB_CACHE) / "models--chaofengc--IQA-PyTorch-Weights")
    except ImportError:
        pass
    return caches


def build_pyiqa(name: str, device: str = "cpu") -> Any:
    """A no-reference metric from pyiqa (opt-in, non-commercial licence); ``f(pred) -> float``."""
    import torch

    pyiqa = _import("pyiqa", "pip install pyiqa  (opt-in: its licence is non-commercial)")
    fetch = f"python -c \"import pyiqa; pyiqa.create_metric('{name}')\""
    caches = _pyiqa_caches()
    key = _PYIQA_WEIGHT_KEYS.get(name, name)
    if not any(key in f.name.lower() for c in caches if c.is_dir() for f in c.rglob("*")):
        # Checked first so that pyiqa never tries to download during an evaluation.
        raise MetricUnavailable(f"pyiqa weights for '{name}' are not in {' or '.join(map(str, caches))}; "
                                f"fetch them once online with: {fetch}")
    try:
        metric = pyiqa.create_metric(name, device=torch.device(device), as_loss=False)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch/load weights means "unavailable", with why
        raise MetricUnavailable(
            f"pyiqa could not load '{name}' ({type(exc).__name__}: {exc}); fetch its weights once online with: "
            f"{fetch}") from None

    def score(pred: np.ndarray) -> float:
        with torch.no_grad():
            return float(metric(_to_tensor(pred, device)).reshape(-1)[0].item())

    return score
