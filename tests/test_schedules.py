"""Tests for stablesr.schedules (respacing, base/respaced DDPM buffers, DDIM tables) and the noise plumbing of
stablesr.sampling.

Reference values: OFFICIAL.md 4.1, 4.2, 4.4 and 10; exact buffers from the golden vectors
(``sched.*`` of the sampling cases and the schedule buffers stored in ``weights/tiny_ldm.ckpt``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablesr.diffusion.sampling import (
    RecordedNoise,
    ddim_step,
    ddpm_step,
    predict_x0,
    sample_ddim,
    sample_ddpm,
)
from stablesr.diffusion.schedules import DDIMTable, DiffusionSchedule, base_betas, space_timesteps

FIELDS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


_BASE = DiffusionSchedule.base()


@pytest.fixture(scope="module")
def base() -> DiffusionSchedule:
    return DiffusionSchedule.base()


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_within_ulps(actual: torch.Tensor, expected: torch.Tensor, ulps: int = 1, name: str = "") -> None:
    """``|actual - expected| <= ulps`` float32 spacings of ``expected``, elementwise (shapes must match)."""
    assert actual.shape == expected.shape, name
    a = actual.detach().to(torch.float64).numpy()
    e = expected.detach().to(torch.float64).numpy()
    spacing = np.spacing(np.abs(e).astype(np.float32)).astype(np.float64)
    bad = np.abs(a - e) > ulps * spacing
    assert not bad.any(), f"{name}: {bad.sum()} entries off by more than {ulps} ulp, e.g. index {np.argmax(bad)}"


# ---------------------------------------------------------------------------------------------
# space_timesteps

N20 = [0, 53, 105, 158, 210, 263, 315, 368, 421, 473, 526, 578, 631, 684, 736, 789, 841, 894, 946, 999]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [0]),
        (2, [0, 999]),
        (4, [0, 333, 666, 999]),
        (7, [0, 166, 333, 500, 666, 832, 999]),  # half-to-even rounding of the running sum
        (20, N20),
    ],
)
def test_space_timesteps_reference_values(n: int, expected: list[int]) -> None:
    assert space_timesteps(n) == expected


def test_space_timesteps_long_lists() -> None:
    s50 = space_timesteps(50)
    assert s50[:5] == [0, 20, 41, 61, 82] and s50[-3:] == [958, 979, 999]
    s200 = space_timesteps(200)
    assert len(s200) == 200
    assert s200[:3] == [0, 5, 10] and s200[-3:] == [989, 994, 999]
    assert space_timesteps(1000) == list(range(1000))


@pytest.mark.parametrize("bad", [0, -1, 1001, 5000])
def test_space_timesteps_rejects_bad_counts(bad: int) -> None:
    with pytest.raises(ValueError) as info:
        space_timesteps(bad)
    assert str(bad) in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1000))
def test_space_timesteps_properties(n: int) -> None:
    steps = space_timesteps(n)
    assert len(steps) == n
    assert steps[0] == 0
    assert all(b > a for a, b in itertools.pairwise(steps))
    if n > 1:
        assert steps[-1] == 999
        stride = 999 / (n - 1)
        assert all(abs(s - k * stride) <= 0.5 + 1e-9 for k, s in enumerate(steps))


# ---------------------------------------------------------------------------------------------
# base schedule


@pytest.mark.parametrize(
    ("t", "abar"),
    [(0, 0.99915), (50, 0.951577), (333, 0.534962), (500, 0.276333), (666, 0.105080), (950, 0.0082471),
     (999, 0.00466010)],
)
def test_base_alphas_cumprod_reference(base: DiffusionSchedule, t: int, abar: float) -> None:
    assert float(base.alphas_cumprod[t]) == pytest.approx(abar, rel=1e-5)


def test_base_schedule_layout(base: DiffusionSchedule) -> None:
    assert len(base) == 1000
    assert torch.equal(base.timesteps, torch.arange(1000))
    for name in FIELDS:
        value = getattr(base, name)
        assert value.dtype == torch.float32 and value.shape == (1000,), name
    assert float(base.sqrt_alphas_cumprod[999]) == pytest.approx(0.0682649, rel=1e-5)
    assert float(base.sqrt_one_minus_alphas_cumprod[999]) == pytest.approx(0.997667, rel=1e-5)
    betas = base_betas()
    assert betas.dtype == np.float64
    assert betas[0] == pytest.approx(0.00085, rel=1e-12) and betas[-1] == pytest.approx(0.012, rel=1e-12)
    # linear in sqrt(beta)
    np.testing.assert_allclose(np.diff(np.sqrt(betas)), (0.012**0.5 - 0.00085**0.5) / 999, rtol=1e-9)
    # abar is decreasing and the posterior of the first step has zero variance
    assert bool((base.alphas_cumprod[1:] < base.alphas_cumprod[:-1]).all())
    assert float(base.posterior_variance[0]) == 0.0
    assert float(base.posterior_log_variance_clipped[0]) == pytest.approx(np.log(1e-20))


def test_base_schedule_matches_golden_buffers(golden_dir: Path, base: DiffusionSchedule) -> None:
    """The DDIM cases store the plain 1000-step buffers the official model used."""
    golden = _load(golden_dir / "cases" / "h_ddim_cfg_eps.safetensors")
    for name in FIELDS:
        assert_within_ulps(getattr(base, name), golden[f"sched.{name}"], name=name)


# ---------------------------------------------------------------------------------------------
# respaced DDPM


def test_respaced_200_reference_values() -> None:
    """OFFICIAL 10: respaced betas and posterior variances for N=200."""
    s = DiffusionSchedule.respaced(200)
    assert len(s) == 200
    assert float(s.betas[0]) == pytest.approx(0.00085, rel=1e-4)
    assert float(s.betas[1]) == pytest.approx(0.0043133, rel=1e-4)
    assert float(s.betas[199]) == pytest.approx(0.0584094, rel=1e-5)
    assert float(s.posterior_variance[1]) == pytest.approx(7.106e-4, rel=1e-3)
    assert float(s.posterior_variance[199]) == pytest.approx(0.058392, rel=1e-4)
    assert s.timesteps.tolist() == space_timesteps(200)


def test_respaced_4_reference_values() -> None:
    s = DiffusionSchedule.respaced(4)
    assert s.timesteps.tolist() == [0, 333, 666, 999]
    np.testing.assert_allclose(s.betas.numpy(), [0.00085, 0.46458, 0.80357, 0.95565], rtol=1e-4)
    assert float(s.posterior_variance[3]) == pytest.approx(0.85924, rel=1e-4)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 50, 200])
def test_respaced_schedule_follows_the_kept_steps(base: DiffusionSchedule, n: int) -> None:
    s = DiffusionSchedule.respaced(n)
    kept = space_timesteps(n)
    assert s.timesteps.dtype == torch.int64 and s.timesteps.tolist() == kept
    # the respaced cumulative product lands on the base abar of each kept step (up to float32 re-derivation)
    torch.testing.assert_close(s.alphas_cumprod, base.alphas_cumprod[kept], rtol=5e-6, atol=0)
    # at index 0 the posterior is exactly the x0 prediction
    assert float(s.posterior_mean_coef1[0]) == 1.0
    assert float(s.posterior_mean_coef2[0]) == 0.0
    assert float(s.posterior_variance[0]) == 0.0
    assert float(s.alphas_cumprod_prev[0]) == 1.0
    assert float(s.betas[0]) == pytest.approx(1 - float(base.alphas_cumprod[0]), rel=1e-6)


def test_respaced_1000_reproduces_the_base_schedule(base: DiffusionSchedule) -> None:
    """Keeping every step gives back abar exactly; the betas only up to float32 cancellation in 1 - abar_t/abar_t-1."""
    s = DiffusionSchedule.respaced(1000)
    assert_within_ulps(s.alphas_cumprod, base.alphas_cumprod, name="alphas_cumprod")
    torch.testing.assert_close(s.betas, base.betas, rtol=5e-4, atol=0)
    torch.testing.assert_close(s.posterior_variance[1:], base.posterior_variance[1:], rtol=5e-4, atol=0)


@pytest.mark.parametrize(("case", "steps"), [("c_ddpm_eps", 6), ("c2_ddpm_v", 4), ("d_canvas", 4),
                                             ("d2_canvas_small_input", 3)])
def test_respaced_matches_golden_sched(golden_dir: Path, case: str, steps: int) -> None:
    golden = _load(golden_dir / "cases" / f"{case}.safetensors")
    s = DiffusionSchedule.respaced(steps)
    for name in FIELDS:
        assert_within_ulps(getattr(s, name), golden[f"sched.{name}"], name=f"{case}: {name}")
    assert torch.equal(s.timesteps, golden["sched.ori_timesteps"])
    # the canvas script's x_T uses the ORIGINAL 1000-step schedule
    if "sched.q_sample_sqrt_alphas_cumprod" in golden:
        base = DiffusionSchedule.base()
        assert_within_ulps(base.sqrt_alphas_cumprod, golden["sched.q_sample_sqrt_alphas_cumprod"])
        assert_within_ulps(base.sqrt_one_minus_alphas_cumprod, golden["sched.q_sample_sqrt_one_minus_alphas_cumprod"])


def test_model_constructor_schedule_matches_checkpoint_buffers(tiny_weights: dict[str, Path]) -> None:
    """The 12 schedule buffers in the tiny official checkpoint are ``respaced(1000)`` (time_replace = 1000)."""
    sd = torch.load(tiny_weights["ldm"], map_location="cpu", weights_only=True)["state_dict"]
    s = DiffusionSchedule.respaced(1000)
    for name in FIELDS:
        assert_within_ulps(getattr(s, name), sd[name], name=name)
    # the 12th buffer is not kept by DiffusionSchedule; it must agree with our abar
    expected = torch.from_numpy(np.log(np.float32(1.0) - s.alphas_cumprod.numpy()))  # float32, as registered
    assert_within_ulps(sd["log_one_minus_alphas_cumprod"], expected, ulps=2, name="log_one_minus_alphas_cumprod")


# ---------------------------------------------------------------------------------------------
# DDIM tables


def test_ddim_compat_table_s5(base: DiffusionSchedule) -> None:
    t = DDIMTable.build(5, eta=0.5, base=base)
    ac = base.alphas_cumprod
    assert len(t) == 5
    assert t.model_t == [999, 749, 500, 250, 0]
    assert t.alpha == [ac[i].item() for i in (800, 600, 400, 200, 0)]
    assert t.alpha_prev == [ac[i].item() for i in (600, 400, 200, 0, 0)]
    assert t.sigma[-1] == 0.0 and all(s > 0 for s in t.sigma[:-1])


def test_ddim_compat_table_truncates_the_uniform_table(base: DiffusionSchedule) -> None:
    """S=3: range(0, 1000, 333) has 4 entries (0, 333, 666, 999); only the first 3 are used."""
    t = DDIMTable.build(3, eta=1.0, base=base)
    ac = base.alphas_cumprod
    assert t.model_t == [999, 500, 0]
    assert t.alpha == [ac[i].item() for i in (666, 333, 0)]
    assert t.alpha_prev[-1] == ac[0].item()  # the final latent sits at abar_0, not at x0
    # S=30: the uniform table has 31 entries
    t30 = DDIMTable.build(30, eta=0.0, base=base)
    assert len(t30) == 30 and t30.alpha[0] == ac[957].item() and t30.alpha[-1] == ac[0].item()


@pytest.mark.parametrize(("steps", "first_coef_t"), [(20, 950), (50, 980)])
def test_ddim_compat_timestep_mismatch(base: DiffusionSchedule, steps: int, first_coef_t: int) -> None:
    """OFFICIAL 4.4: the networks see t=999 at the first step while the update uses another abar."""
    t = DDIMTable.build(steps, eta=0.0, base=base)
    assert t.model_t[0] == 999
    assert t.alpha[0] == base.alphas_cumprod[first_coef_t].item()


@pytest.mark.parametrize("compat", [True, False])
def test_ddim_eta_zero_is_deterministic(base: DiffusionSchedule, compat: bool) -> None:
    t = DDIMTable.build(7, eta=0.0, timestep_mismatch=compat, base=base)
    assert t.sigma == [0.0] * 7


def test_ddim_clean_mode(base: DiffusionSchedule) -> None:
    ac = base.alphas_cumprod
    for steps in (3, 5, 20):
        t = DDIMTable.build(steps, eta=1.0, timestep_mismatch=False, base=base)
        assert t.model_t == space_timesteps(steps)[::-1]
        assert t.alpha == [ac[i].item() for i in t.model_t]  # same timesteps as the networks
        assert t.alpha_prev[:-1] == [ac[i].item() for i in t.model_t[1:]]
        assert t.alpha_prev[-1] == 1.0  # the last step lands on x0
        assert t.sigma[-1] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 1000), st.floats(0.0, 1.0), st.booleans())
def test_ddim_table_properties(steps: int, eta: float, compat: bool) -> None:
    t = DDIMTable.build(steps, eta=eta, timestep_mismatch=compat, base=_BASE)
    assert len(t) == len(t.alpha) == len(t.alpha_prev) == len(t.sigma) == steps
    assert t.model_t == space_timesteps(steps)[::-1]
    a, a_prev, sigma = np.array(t.alpha), np.array(t.alpha_prev), np.array(t.sigma)
    assert (a_prev >= a).all(), "every step must move towards less noise"
    assert (sigma >= 0).all()
    assert (1.0 - a_prev - sigma**2 >= -1e-12).all(), "the DDIM direction coefficient must stay real"


@pytest.mark.parametrize(("case", "steps", "eta"), [("h_ddim_cfg_eps", 5, 0.5), ("h2_ddim_v", 4, 0.0),
                                                    ("h3_ddim_canvas_cfg", 3, 1.0)])
def test_ddim_table_matches_golden_sampler_arrays(golden_dir: Path, base: DiffusionSchedule, case: str,
                                                 steps: int, eta: float) -> None:
    """The golden arrays are in index order (and may be longer than S); our table is in iteration order."""
    golden = _load(golden_dir / "cases" / f"{case}.safetensors")
    t = DDIMTable.build(steps, eta=eta, base=base)
    assert t.model_t == golden["sched.ddim_timesteps_script"].flip(0).tolist()
    alpha = golden["sched.sampler.ddim_alphas"][:steps].flip(0)
    alpha_prev = golden["sched.sampler.ddim_alphas_prev"][:steps].flip(0)
    sigma = golden["sched.sampler.ddim_sigmas"][:steps].flip(0)
    assert torch.equal(torch.tensor(t.alpha, dtype=torch.float64), alpha)
    assert torch.equal(torch.tensor(t.alpha_prev, dtype=torch.float64), alpha_prev)
    # sigma: float64 from float32 abar; the official mixes in float32 `1 - a`, and rounds to float32 when used
    assert_within_ulps(torch.tensor(t.sigma, dtype=torch.float64), sigma, name="sigma")
    assert_within_ulps(torch.tensor(t.sigma, dtype=torch.float32).double(), sigma.float().double(), name="sigma f32")


# ---------------------------------------------------------------------------------------------
# sampling: the last DDPM step, recorded noise


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_ddpm_step_at_index_zero_returns_the_x0_prediction(parameterization: str) -> None:
    sched = DiffusionSchedule.respaced(4)
    x, out = torch.randn(2, 4, 8, 6), torch.randn(2, 4, 8, 6)
    noise = torch.randn(2, 4, 8, 6) * 1e3
    x0 = predict_x0(sched, 0, x, out, parameterization)
    assert torch.equal(ddpm_step(sched, 0, x, out, parameterization, noise), x0)
    # x0 prediction from the formulas of OFFICIAL 4.1, in float64
    abar = float(sched.alphas_cumprod[0])
    xd, od = x.double(), out.double()
    if parameterization == "eps":
        ref = (1 / abar) ** 0.5 * xd - (1 / abar - 1) ** 0.5 * od
    else:
        ref = abar**0.5 * xd - (1 - abar) ** 0.5 * od
    torch.testing.assert_close(x0.double(), ref, rtol=1e-5, atol=1e-5)
    # at any other index the noise is used
    assert not torch.allclose(ddpm_step(sched, 1, x, out, parameterization, noise),
                              ddpm_step(sched, 1, x, out, parameterization, torch.zeros_like(noise)))


def test_ddim_step_deterministic_update_with_eta_zero() -> None:
    table = DDIMTable.build(4, eta=0.0)
    x, out = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x_prev, x0 = ddim_step(table, 0, x, out, "eps", torch.randn(1, 4, 8, 8))
    a, ap = table.alpha[0], table.alpha_prev[0]
    ref_x0 = (x.double() - (1 - a) ** 0.5 * out.double()) / a**0.5
    torch.testing.assert_close(x0.double(), ref_x0, rtol=1e-5, atol=1e-5)
    ref_prev = ap**0.5 * ref_x0 + (1 - ap) ** 0.5 * out.double()
    torch.testing.assert_close(x_prev.double(), ref_prev, rtol=1e-5, atol=1e-5)


def test_recorded_noise_replays_in_order_and_converts() -> None:
    draws = [torch.randn(1, 4, 8, 8), torch.randn(2, 3)]
    noise = RecordedNoise([d.clone() for d in draws])
    like = torch.zeros(1, dtype=torch.float64)
    first = noise.draw((1, 4, 8, 8), like=like)
    assert first.dtype == torch.float64 and torch.equal(first, draws[0].double())
    assert torch.equal(noise.draw([2, 3], like=torch.zeros(1)), draws[1])
    assert noise.position == 2


def test_recorded_noise_raises_when_exhausted() -> None:
    noise = RecordedNoise([torch.zeros(3)])
    noise.draw((3,), like=torch.zeros(1))
    with pytest.raises(RuntimeError, match="exhausted"):
        noise.draw((3,), like=torch.zeros(1))
    with pytest.raises(RuntimeError, match="exhausted"):
        RecordedNoise().draw((1,), like=torch.zeros(1))


def test_recorded_noise_raises_on_shape_mismatch() -> None:
    recorded = torch.randn(1, 4, 8, 8)
    noise = RecordedNoise([recorded])
    with pytest.raises(RuntimeError) as info:
        noise.draw((1, 4, 8, 9), like=torch.zeros(1))
    assert "(1, 4, 8, 8)" in str(info.value) and "(1, 4, 8, 9)" in str(info.value)
    # the mismatching request did not consume the recorded draw
    assert torch.equal(noise.draw((1, 4, 8, 8), like=torch.zeros(1)), recorded)


def test_sample_ddpm_draws_once_per_step_and_feeds_original_timesteps() -> None:
    sched = DiffusionSchedule.respaced(4)
    seen: list[int] = []

    def model_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    x = torch.randn(1, 4, 4, 4)
    noise = RecordedNoise([torch.randn(1, 4, 4, 4) for _ in range(4)])
    sample_ddpm(model_fn, x, sched, "eps", noise)
    assert seen == [999, 666, 333, 0]
    assert noise.position == 4  # a draw also at the last step, as the official loop does
    with pytest.raises(RuntimeError, match="exhausted"):
        sample_ddpm(model_fn, x, sched, "eps", RecordedNoise([torch.randn(1, 4, 4, 4) for _ in range(3)]))


def test_sample_ddim_draws_once_per_step_even_with_eta_zero() -> None:
    table = DDIMTable.build(5, eta=0.0)
    seen: list[int] = []

    def model_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    noise = RecordedNoise([torch.randn(1, 4, 4, 4) for _ in range(5)])
    sample_ddim(model_fn, torch.randn(1, 4, 4, 4), table, "eps", noise)
    assert seen == [999, 749, 500, 250, 0]
    assert noise.position == 5
