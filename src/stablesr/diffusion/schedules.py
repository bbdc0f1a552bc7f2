"""Noise schedules of the official StableSR code: the 1000-step base, DDPM respacing, the DDIM tables.

Everything is computed with the same dtypes as the official code (NumPy float64 for the base
schedule, float32 for respacing) so that golden vectors replay to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.00085
LINEAR_END = 0.012


def space_timesteps(num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The official respacing rule: ``round(k * (T-1)/(N-1))`` accumulated in floating point, sorted.

    Python's ``round`` (half to even) is used on the running sum exactly as the official
    loop does, so odd step counts round the same way (``N=7 -> [0, 166, 333, 500, 666, 832, 999]``).
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"number of steps must be in 1..{num_timesteps}, got {num_steps}")
    stride = 1.0 if num_steps == 1 else (num_timesteps - 1) / (num_steps - 1)
    steps, cur = set(), 0.0
    for _ in range(num_steps):
        steps.add(round(cur))
        cur += stride
    return sorted(steps)


def base_betas(
    num_timesteps: int = NUM_TRAIN_TIMESTEPS, start: float = LINEAR_START, end: float = LINEAR_END
) -> np.ndarray:
    """LDM's "linear" schedule, which is linear in sqrt(beta) (diffusers' ``scaled_linear``), in float64."""
    # torch's linspace, as the official code uses, so the float64 values match to the last bit
    return (torch.linspace(start**0.5, end**0.5, num_timesteps, dtype=torch.float64) ** 2).numpy()


@dataclass(frozen=True)
class DiffusionSchedule:
    """The buffers ``register_schedule`` builds, as float32 tensors indexed by (respaced) step index.

    ``timesteps[i]`` is the ORIGINAL 0..999 timestep of index ``i``: what the networks receive.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    timesteps: torch.Tensor

    @classmethod
    def from_betas(cls, betas: np.ndarray, timesteps: list[int] | None = None) -> DiffusionSchedule:
        """Mirror of ``register_schedule(given_betas=betas)`` including its float32/float64 mixing."""
        alphas = 1.0 - betas
        ac = np.cumprod(alphas, axis=0)
        ac_prev = np.append(1.0, ac[:-1])  # float64 even when betas are float32, as in the original
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
        return cls(
            betas=f32(betas),
            alphas_cumprod=f32(ac),
            alphas_cumprod_prev=f32(ac_prev),
            sqrt_alphas_cumprod=f32(np.sqrt(ac)),
            sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)),
            sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / ac)),
            sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / ac - 1)),
            posterior_variance=f32(post_var),
            posterior_log_variance_clipped=f32(np.log(np.maximum(post_var, 1e-20))),
            posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1.0 - ac)),
            posterior_mean_coef2=f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
            timesteps=torch.tensor(timesteps if timesteps is not None else range(len(betas)), dtype=torch.int64),
        )

    @classmethod
    def base(cls, linear_start: float = LINEAR_START, linear_end: float = LINEAR_END) -> DiffusionSchedule:
        """The 1000-step training schedule."""
        return cls.from_betas(base_betas(NUM_TRAIN_TIMESTEPS, linear_start, linear_end))

    @classmethod
    def respaced(
        cls, num_steps: int, linear_start: float = LINEAR_START, linear_end: float = LINEAR_END,
        timesteps: list[int] | None = None,
    ) -> DiffusionSchedule:
        """The respaced DDPM schedule: ``beta'_k = 1 - abar[t_k] / abar[t_{k-1}]`` from the float32 ``abar``.

        ``timesteps`` replaces the official ``space_timesteps(num_steps)`` choice of kept steps.
        """
        base = cls.base(linear_start, linear_end)
        kept = sorted(timesteps) if timesteps is not None else space_timesteps(num_steps)
        ac = base.alphas_cumprod  # float32, as the official loop reads it back from the model buffer
        last = torch.tensor(1.0, dtype=torch.float32)
        betas = []
        for t in kept:
            betas.append((1 - ac[t] / last).item())
            last = ac[t]
        return cls.from_betas(np.array(betas, dtype=np.float32), kept)

    def __len__(self) -> int:
        return len(self.timesteps)


@dataclass(frozen=True)
class DDIMTable:
    """Per-iteration DDIM coefficients plus the timesteps the networks receive.

    Iteration ``k`` (0 = noisiest) calls the networks at ``model_t[k]`` and updates with
    ``alpha[k]``, ``alpha_prev[k]``, ``sigma[k]``. With ``timestep_mismatch`` (the official behaviour,
    ``Quirks.ddim_timestep_mismatch``) the coefficients come from the uniform table ``range(0, 1000, 1000 // S)`` while the
    networks get ``space_timesteps(S)`` -- two different lists. Without it one list serves both.
    """

    model_t: list[int]
    alpha: list[float]
    alpha_prev: list[float]
    sigma: list[float]

    @classmethod
    def build(cls, num_steps: int, eta: float, timestep_mismatch: bool = True, base: DiffusionSchedule | None = None,
              timesteps: list[int] | None = None) -> DDIMTable:
        """``timesteps`` (ascending) replaces ``space_timesteps(num_steps)`` as the networks' timesteps."""
        base = base or DiffusionSchedule.base()
        ac = base.alphas_cumprod
        model_t = sorted(timesteps) if timesteps is not None else space_timesteps(num_steps)
        if timestep_mismatch:
            coef_t = list(range(0, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS // num_steps))[:num_steps]
            prev = [ac[0].item()] + [ac[t].item() for t in coef_t[:-1]]  # alpha_prev of index 0 is abar_0
        else:
            coef_t = model_t
            prev = [1.0] + [ac[t].item() for t in coef_t[:-1]]  # the last step lands exactly on x0
        a = np.array([ac[t].item() for t in coef_t], dtype=np.float64)
        a_prev = np.array(prev, dtype=np.float64)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        # iteration order: noisiest first
        return cls(model_t=model_t[::-1], alpha=a[::-1].tolist(), alpha_prev=a_prev[::-1].tolist(),
                   sigma=sigma[::-1].tolist())

    def __len__(self) -> int:
        return len(self.model_t)
