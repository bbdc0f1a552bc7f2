"""``stablesr upscale --model bicubic|lanczos``: classical upscalers behind the same CLI, naming and output code.

They need no weights and no model download, so a baseline folder for ``stablesr compare`` is made
with exactly the command line (and file names) of the StableSR run it sits next to.
"""

from __future__ import annotations

import numpy as np

from ..config import UpscaleOptions
from ..errors import StableSRError
from ..evaluation.baselines import classical_upscale
from ..imageio.read import LoadedImage
from ..service import ExpertOptions, UpscaleResult


class ClassicalUpscaler:
    """The :class:`~stablesr.service.Upscaler` interface over :func:`~stablesr.evaluation.baselines.classical_upscale`.

    Example:
        >>> up = ClassicalUpscaler("lanczos")
        >>> up.upscale(np.zeros((4, 6, 3), np.float32), UpscaleOptions(scale=2)).rgb.shape
        (8, 12, 3)
    """

    def __init__(self, method: str) -> None:
        self.method = method

    @property
    def name(self) -> str:
        return self.method

    def check(self, options: UpscaleOptions, expert: object = None) -> None:
        """Nothing to check: prompts, tiles and sampling settings do not apply."""

    def check_size(self, size: tuple[int, int], scale: float, max_pixels: int | None, *, geometry: str = "exact"
                   ) -> None:
        h, w = round(size[0] * scale), round(size[1] * scale)
        if max_pixels is not None and h * w > max_pixels:
            raise StableSRError(f"the output would be {w}x{h} ({h * w / 1e6:.1f} MP), over --max-output-pixels "
                                f"{max_pixels}; lower -s or raise the limit (0 = none)")

    def upscale(self, image: LoadedImage | np.ndarray, options: UpscaleOptions,
                expert: ExpertOptions | None = None, *, reference: np.ndarray | None = None) -> UpscaleResult:
        rgb = image.rgb if isinstance(image, LoadedImage) else np.asarray(image, np.float32)[..., :3]
        alpha = image.alpha if isinstance(image, LoadedImage) else None
        out = classical_upscale(rgb, options.scale, self.method)
        return UpscaleResult(out, None if alpha is None else classical_upscale(alpha, options.scale, self.method))
