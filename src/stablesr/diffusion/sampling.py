"""DDPM and DDIM sampling loops with the official update rules, and injectable noise.

The loops are written here rather than with diffusers' schedulers because StableSR needs three
things those cannot express: the networks receive the ORIGINAL timestep while the respaced DDPM
posterior uses the respaced index; the official DDIM takes its coefficients from a different
timestep table than the one the networks see (reproduced in ``compat`` mode); and every Gaussian
draw must be replaceable by a recorded tensor so official runs can be replayed exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..config import Prediction, Sampler
from ..errors import OptionsError
from .schedules import DDIMTable, DiffusionSchedule

ModelFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``model_fn(x, t)`` -> eps or v prediction for latent ``x`` at ORIGINAL timestep ``t`` (guidance applied)."""


class NoiseSource:
    """Where Gaussian draws come from. ``draw(shape, like)`` returns a tensor on ``like``'s device/dtype.

    The default draws from an optional ``torch.Generator`` (seeded runs are reproducible).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def draw(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        device = self.generator.device if self.generator is not None else like.device
        # a CPU draw for an accelerator goes through pinned memory: the copy is queued, the host never waits
        pinned = device.type == "cpu" and like.device.type == "cuda"
        out = torch.randn(tuple(shape), generator=self.generator, device=device, dtype=torch.float32,
                          pin_memory=pinned)
        return out.to(like.device, non_blocking=pinned).to(like.dtype)


@dataclass
class RecordedNoise(NoiseSource):
    """Replays recorded draws in order (golden replay, or reproducing another run's exact noise).

    Example:
        >>> noise = RecordedNoise([torch.zeros(1, 4, 8, 8)])
        >>> noise.draw((1, 4, 8, 8), like=torch.ones(1)).abs().sum()
        tensor(0.)
    """

    draws: list[torch.Tensor] = field(default_factory=list)
    position: int = 0

    def __post_init__(self) -> None:
        self.generator = None

    def draw(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        if self.position >= len(self.draws):
            raise RuntimeError(f"recorded noise exhausted after {self.position} draws")
        out = self.draws[self.position]
        if tuple(out.shape) != tuple(shape):
            raise RuntimeError(f"recorded draw {self.position} has shape {tuple(out.shape)}, expected {tuple(shape)}")
        self.position += 1
        return out.to(device=like.device, dtype=like.dtype)


def _coef(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32, device=x.device)


@dataclass(frozen=True)
class StepInfo:
    """Where a sampler step is: ``step`` counts the steps run (0 = first); ``index`` is the respaced index k,
    counted from the LAST step (0 = the step that ends at x0, as the official DDPM loop counts, also for
    DDIM); ``timestep`` the original timestep the networks saw."""

    step: int
    index: int
    timestep: int


X0Transform = Callable[[torch.Tensor, StepInfo], torch.Tensor]
"""``x0_transform(x0, info)`` -> the x0 the posterior uses (e.g. face reference guidance); called every step."""


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, sqrt_recip_a: torch.Tensor, sqrt_recipm1_a: torch.Tensor
                ) -> torch.Tensor:
    """eps prediction wrapper: ``x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps`` (the official DDPM arithmetic)."""
    return sqrt_recip_a * x - sqrt_recipm1_a * eps


def x0_from_v(x: torch.Tensor, v: torch.Tensor, sqrt_a: torch.Tensor, sqrt_one_minus_a: torch.Tensor) -> torch.Tensor:
    """v prediction wrapper: ``x0 = sqrt(abar) x - sqrt(1 - abar) v``."""
    return sqrt_a * x - sqrt_one_minus_a * v


def eps_from_v(x: torch.Tensor, v: torch.Tensor, sqrt_a: torch.Tensor, sqrt_one_minus_a: torch.Tensor) -> torch.Tensor:
    """``eps = sqrt(abar) v + sqrt(1 - abar) x`` (the official DDIM arithmetic for v models)."""
    return sqrt_a * v + sqrt_one_minus_a * x


def _float32_on(values: object, device: torch.device | str) -> torch.Tensor:
    """A coefficient table as a float32 tensor on ``device`` (built once per run, indexed every step)."""
    return torch.as_tensor(values).to(device=device, dtype=torch.float32)


@dataclass(frozen=True)
class DDPMCoefficients:
    """The respaced schedule's per-index coefficients as float32 tensors on one device (built once per run,
    so a step indexes device tensors instead of copying CPU floats)."""

    sqrt_a: torch.Tensor
    sqrt_one_minus_a: torch.Tensor
    sqrt_recip_a: torch.Tensor
    sqrt_recipm1_a: torch.Tensor
    mean_coef1: torch.Tensor
    mean_coef2: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, sched: DiffusionSchedule, device: torch.device | str) -> DDPMCoefficients:
        f = lambda v: _float32_on(v, device)
        return cls(f(sched.sqrt_alphas_cumprod), f(sched.sqrt_one_minus_alphas_cumprod),
                   f(sched.sqrt_recip_alphas_cumprod), f(sched.sqrt_recipm1_alphas_cumprod),
                   f(sched.posterior_mean_coef1), f(sched.posterior_mean_coef2),
                   (0.5 * f(sched.posterior_log_variance_clipped)).exp())


@dataclass(frozen=True)
class DDIMCoefficients:
    """A DDIM table's per-row coefficients as float32 tensors on one device."""

    a: torch.Tensor
    a_prev: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def of(cls, table: DDIMTable, device: torch.device | str) -> DDIMCoefficients:
        f = lambda v: _float32_on(v, device)
        return cls(f(table.alpha), f(table.alpha_prev), f(table.sigma))


def predict_x0(sched: DiffusionSchedule | DDPMCoefficients, i: int, x: torch.Tensor, out: torch.Tensor,
               parameterization: str) -> torch.Tensor:
    """x0 from the model output at (respaced) index ``i``; never clamped."""
    c = sched if isinstance(sched, DDPMCoefficients) else DDPMCoefficients.of(sched, x.device)
    if parameterization == "v":
        return x0_from_v(x, out, c.sqrt_a[i], c.sqrt_one_minus_a[i])
    return x0_from_eps(x, out, c.sqrt_recip_a[i], c.sqrt_recipm1_a[i])


def ddpm_step(
    sched: DiffusionSchedule | DDPMCoefficients, i: int, x: torch.Tensor, out: torch.Tensor, parameterization: str,
    noise: torch.Tensor, *, x0_transform: X0Transform | None = None, info: StepInfo | None = None,
) -> torch.Tensor:
    """One ancestral step with the fixed-small posterior variance; at ``i == 0`` the noise is masked out.

    The step is x0 (from the prediction), then ``x0_transform(x0, info)`` if given, then the posterior.
    """
    c = sched if isinstance(sched, DDPMCoefficients) else DDPMCoefficients.of(sched, x.device)
    x0 = predict_x0(c, i, x, out, parameterization)
    if x0_transform is not None:
        x0 = x0_transform(x0, info or StepInfo(0, i, -1))
    mean = c.mean_coef1[i] * x0 + c.mean_coef2[i] * x
    if i == 0:
        return mean
    return mean + c.std[i] * noise


def ddim_step(
    table: DDIMTable | DDIMCoefficients, k: int, x: torch.Tensor, out: torch.Tensor, parameterization: str,
    noise: torch.Tensor, *, x0_transform: X0Transform | None = None, info: StepInfo | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step of iteration ``k``; returns ``(x_prev, pred_x0)``.

    With ``x0_transform`` the transformed x0 is used and eps is recomputed from it, so the update stays on
    the line through ``x`` and the new x0.
    """
    c = table if isinstance(table, DDIMCoefficients) else DDIMCoefficients.of(table, x.device)
    a_t, a_prev, sigma = c.a[k], c.a_prev[k], c.sigma[k]
    sqrt_one_minus_a = (1 - a_t).sqrt()
    eps = eps_from_v(x, out, a_t.sqrt(), sqrt_one_minus_a) if parameterization == "v" else out
    x0 = (x - sqrt_one_minus_a * eps) / a_t.sqrt()
    if x0_transform is not None:
        x0 = x0_transform(x0, info or StepInfo(0, k, -1))
        eps = (x - a_t.sqrt() * x0) / sqrt_one_minus_a
    direction = (1.0 - a_prev - sigma**2).sqrt() * eps
    return a_prev.sqrt() * x0 + direction + sigma * noise, x0


def q_sample(latent: torch.Tensor, t: int, noise: torch.Tensor, base: DiffusionSchedule | None = None) -> torch.Tensor:
    """``sqrt(abar_t) latent + sqrt(1 - abar_t) noise`` on the 1000-step schedule (t is an original timestep)."""
    base = base or DiffusionSchedule.base()
    return _coef(base.sqrt_alphas_cumprod[t], latent) * latent + _coef(base.sqrt_one_minus_alphas_cumprod[t], latent) * noise


StepCallback = Callable[[int, int, torch.Tensor], "torch.Tensor | None"]
"""``callback(iteration, timestep, latent_after_step)``; a returned tensor replaces the latent."""
StopCheck = Callable[[], bool]
"""Asked before every step; True ends sampling early (the current latent is the result)."""


def sample_ddpm(
    model_fn: ModelFn,
    x: torch.Tensor,
    sched: DiffusionSchedule,
    parameterization: str,
    noise: NoiseSource,
    *,
    start_timestep: int | None = None,
    callback: StepCallback | None = None,
    interrupted: StopCheck | None = None,
    x0_transform: X0Transform | None = None,
) -> torch.Tensor:
    """The respaced DDPM loop: from the last index down to 0, one noise draw per step (also the last).

    ``start_timestep`` skips the steps whose original timestep exceeds it (start from an
    intermediate step; pair it with ``q_sample`` of the LR latent at that timestep).
    """
    indices = [i for i in reversed(range(len(sched))) if start_timestep is None or sched.timesteps[i] <= start_timestep]
    coefs = DDPMCoefficients.of(sched, x.device)
    for k, i in enumerate(indices):
        if interrupted is not None and interrupted():
            break
        t = int(sched.timesteps[i])
        out = model_fn(x, t)
        x = ddpm_step(coefs, i, x, out, parameterization, noise.draw(x.shape, like=x), x0_transform=x0_transform,
                      info=StepInfo(k, i, t))
        x = _after_step(callback, k, t, x)
    return x


def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    table: DDIMTable,
    parameterization: str,
    noise: NoiseSource,
    *,
    start_timestep: int | None = None,
    callback: StepCallback | None = None,
    interrupted: StopCheck | None = None,
    x0_transform: X0Transform | None = None,
) -> torch.Tensor:
    """The DDIM loop (one noise draw per step, even when eta is 0, as the official sampler does).

    ``x0_transform`` sees ``StepInfo.index`` = ``len(table) - 1 - k`` (counted from the last step, as DDPM)."""
    indices = [k for k in range(len(table)) if start_timestep is None or table.model_t[k] <= start_timestep]
    coefs = DDIMCoefficients.of(table, x.device)
    for step, k in enumerate(indices):
        if interrupted is not None and interrupted():
            break
        t = table.model_t[k]
        out = model_fn(x, t)
        x, _ = ddim_step(coefs, k, x, out, parameterization, noise.draw(x.shape, like=x), x0_transform=x0_transform,
                         info=StepInfo(step, len(table) - 1 - k, int(t)))
        x = _after_step(callback, step, t, x)
    return x


def _after_step(callback: StepCallback | None, step: int, t: int, x: torch.Tensor) -> torch.Tensor:
    replaced = callback(step, t, x) if callback is not None else None
    return x if replaced is None else replaced


@dataclass(frozen=True)
class SamplerPlan:
    """Which sampler runs which timesteps with which tables: built once per call, run per image or patch.

    Example:
        >>> plan = SamplerPlan.build("ddim", 4, prediction="eps")
        >>> plan.timesteps
        [999, 666, 333, 0]
    """

    sampler: Sampler
    prediction: Prediction
    schedule: DiffusionSchedule | None = None  # DDPM: the respaced schedule
    table: DDIMTable | None = None  # DDIM: the coefficient table
    start_timestep: int | None = None  # the first timestep that runs, when not the schedule's first

    @classmethod
    def build(cls, sampler: Sampler, steps: int, *, prediction: Prediction, eta: float = 0.0,
              linear_start: float = 0.00085, linear_end: float = 0.012, ddim_timestep_mismatch: bool = True,
              start_timestep: int | None = None) -> SamplerPlan:
        """Tables for ``steps`` steps. One step predicts x0 from t=999 (the official respacing would put a
        lone step at t=0, which only decodes the starting noise). ``start_timestep`` snaps to the first
        step at or below it, so x_T can be noised to exactly that step."""
        one_step = [999] if steps == 1 else None
        if sampler == "ddpm":
            plan = cls(sampler, prediction, schedule=DiffusionSchedule.respaced(steps, linear_start, linear_end,
                                                                                timesteps=one_step))
        else:
            table = DDIMTable.build(steps, eta, timestep_mismatch=ddim_timestep_mismatch and one_step is None,
                                    base=DiffusionSchedule.base(linear_start, linear_end), timesteps=one_step)
            plan = cls(sampler, prediction, table=table)
        if start_timestep is None:
            return plan
        run_t = [t for t in plan.timesteps if t <= int(start_timestep)]
        if not 0 <= int(start_timestep) <= 999 or not run_t:
            raise OptionsError(f"start_timestep must be in 0..999 and not below the last step, got {start_timestep}")
        return replace(plan, start_timestep=run_t[0])

    @property
    def timesteps(self) -> list[int]:
        """The original timesteps that will run, first to last."""
        if self.schedule is not None:
            run = [int(t) for t in reversed(self.schedule.timesteps.tolist())]
        else:
            assert self.table is not None
            run = [int(t) for t in self.table.model_t]
        return run if self.start_timestep is None else [t for t in run if t <= self.start_timestep]

    def run(self, model_fn: ModelFn, x_t: torch.Tensor, noise: NoiseSource, *, callback: StepCallback | None = None,
            interrupted: StopCheck | None = None, x0_transform: X0Transform | None = None) -> torch.Tensor:
        """Sample from ``x_t`` down to x0 (``x0_transform`` edits every step's x0 before the posterior)."""
        if self.schedule is not None:
            return sample_ddpm(model_fn, x_t, self.schedule, self.prediction, noise, start_timestep=self.start_timestep,
                               callback=callback, interrupted=interrupted, x0_transform=x0_transform)
        assert self.table is not None
        return sample_ddim(model_fn, x_t, self.table, self.prediction, noise, start_timestep=self.start_timestep,
                           callback=callback, interrupted=interrupted, x0_transform=x0_transform)
