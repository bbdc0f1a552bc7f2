"""Stage-2 loss networks: VGG16 LPIPS and the taming PatchGAN discriminator (OFFICIAL.md 6.4).

The VGG16 feature stack is defined here with torchvision's parameter names (``features.<i>.weight``)
so a torchvision ``vgg16-397923af.pth`` file loads as is, without torchvision installed. The LPIPS
linear heads use the ``lpips`` package's names (``lin<k>.model.1.weight``) and by default its own
``weights/v0.1/vgg.pth``. A randomly initialised VGG is only used when asked for (tests), and says so.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from ._deps import CheckpointError, load_state_dict

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's `features`
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3 (same indices, so the same state-dict keys)."""
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


class _LinearHead(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(channels, 1, 1, bias=False))


def lpips_package_weights() -> Path | None:
    """The ``lpips`` package's VGG linear-head file, found without importing lpips (it imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    return path if path.is_file() else None


class LPIPS(nn.Module):
    """LPIPS (VGG16, v0.1): per-layer unit-normalised feature differences, weighted by 1x1 heads, averaged.

    Inputs in [-1, 1]; returns (B, 1, 1, 1). ``random_weights`` is True when the VGG is not the real one.
    """

    def __init__(self, vgg_weights: str | None = None, lpips_weights: str | None = None, *,
                 allow_random: bool = False) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(_LinearHead(c) for c in _LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None], persistent=False)
        self.random_weights = vgg_weights is None
        if vgg_weights is not None:
            sd = {k[len("features."):]: v for k, v in load_state_dict(vgg_weights).items() if k.startswith("features.")}
            missing, _ = self.features.load_state_dict(sd, strict=False)
            if missing:
                raise CheckpointError(f"{vgg_weights}: not torchvision VGG16 weights (missing features.{missing[0]})")
        elif not allow_random:
            raise CheckpointError("LPIPS needs VGG16 weights: set loss.vgg_weights to torchvision's "
                                  "vgg16-397923af.pth (or loss.allow_random_lpips for tests)")
        else:
            warnings.warn("LPIPS uses a RANDOMLY INITIALISED VGG16 (test mode), not the perceptual metric",
                          stacklevel=2)
        lin_path = lpips_weights or lpips_package_weights()
        if lin_path is not None:
            sd = torch.load(lin_path, map_location="cpu", weights_only=True)
            heads = {k[len("lin"):]: v for k, v in sd.items() if k.startswith("lin")}
            self.lins.load_state_dict(heads, strict=True)
        elif not allow_random:
            raise CheckpointError("LPIPS linear heads not found: install lpips or set loss.lpips_weights")
        self.requires_grad_(False).eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
                if i == _TAPS[-1]:
                    break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for lin, fa, fb in zip(self.lins, self._taps(a), self._taps(b)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin.model((na - nb) ** 2).mean(dim=(2, 3), keepdim=True)
        return total


class PatchDiscriminator(nn.Module):
    """Taming's ``NLayerDiscriminator`` (PatchGAN, BatchNorm, N(0, 0.02) init); keys ``main.<i>.*`` as official."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * mult),
                    nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**layers, 8)
        seq += [nn.Conv2d(channels * prev, channels * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(channels * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*seq)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean())
