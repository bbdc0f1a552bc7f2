"""Face reference guidance (official ``reference_sr``, OFFICIAL.md 4.7): the first user of the sampler's x0 hook.

At every step whose respaced index ``k`` lies in ``[10, 1000]``, the predicted x0 is pulled towards the
latent of a reference image (e.g. a CodeFormer restoration of the same face) by 10 steps of gradient
descent with step 0.5 on ``L = sum((ref - x0)^2) / B``, in float32. The gradient is ``2 (x0 - ref) / B``,
so each iteration is ``x0 <- x0 - (x0 - ref) / B``: with one image x0 becomes the reference after the
first iteration; with B images it ends at ``ref + (1 - 1/B)^10 (x0 - ref)``. Only the last 10 respaced
steps denoise freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OptionsError
from .sampling import StepInfo


@dataclass(frozen=True)
class ReferenceGuidance:
    """An ``x0_transform`` for :meth:`~stablesr.diffusion.sampling.SamplerPlan.run` with the official constants.

    Args:
        reference: the scaled latent of the reference image, shaped like the sampled latent (or batch 1).
        lr: gradient step (official ``reference_lr`` 0.5).
        iterations: gradient steps per sampling step (official ``reference_step`` 10).
        first_index / last_index: the respaced indices it applies to (official ``reference_range`` [10, 1000]).

    Example:
        >>> g = ReferenceGuidance(torch.zeros(1, 4, 2, 2))
        >>> g(torch.ones(1, 4, 2, 2), StepInfo(0, 10, 51)).abs().max().item()
        0.0
        >>> g(torch.ones(1, 4, 2, 2), StepInfo(190, 9, 46)).min().item()  # k < 10: untouched
        1.0
    """

    reference: torch.Tensor
    lr: float = 0.5
    iterations: int = 10
    first_index: int = 10
    last_index: int = 1000

    def applies(self, info: StepInfo) -> bool:
        """Whether the step at respaced index ``info.index`` is guided."""
        return self.first_index <= info.index <= self.last_index

    def __call__(self, x0: torch.Tensor, info: StepInfo) -> torch.Tensor:
        if not self.applies(info):
            return x0
        ref = self.reference.to(device=x0.device, dtype=torch.float32)
        if ref.shape[1:] != x0.shape[1:] or ref.shape[0] not in (1, x0.shape[0]):
            raise OptionsError(f"reference latent {tuple(ref.shape)} does not match the sampled latent "
                               f"{tuple(x0.shape)}; give a reference image of the input's size")
        x = x0.float()
        batch = x.shape[0]
        for _ in range(self.iterations):  # gradient descent on sum((ref - x)^2) / B, written out
            x = x - self.lr * (2.0 * (x - ref) / batch)
        return x.to(x0.dtype)
