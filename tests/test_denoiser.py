"""The SFT-steered denoiser: gradient checkpointing, torch.compile, threads, per-sample timesteps."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import noise_image, tiny_pipeline

from stablesr.diffusion.denoiser import Conditioning, TextConditioning
from stablesr.diffusion.schedules import DiffusionSchedule
from stablesr.training.losses import stage1_loss


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return tiny_pipeline(tiny_weights)


def inputs(pipe, n=2, size=16):
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(n, 4, size, size, generator=g), torch.randn(n, 4, size, size, generator=g)
    return x, z, Conditioning(z, TextConditioning(pipe.encode_prompt("")))


def stage1_grads(pipe, checkpointing: bool) -> tuple[float, dict[str, torch.Tensor]]:
    den = pipe.denoiser
    trainable = [*den.encoder.named_parameters(prefix="enc"), *den.sft.named_parameters(prefix="sft")]
    for _, prm in trainable:
        prm.requires_grad_(True)
        prm.grad = None
    den.unet.enable_gradient_checkpointing() if checkpointing else den.unet.disable_gradient_checkpointing()
    den.unet.train()  # diffusers checkpoints only in training mode; the tiny UNet has no dropout
    try:
        g = torch.Generator().manual_seed(5)
        z_lr, z_gt, noise = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
        sched = DiffusionSchedule.base()
        loss, _ = stage1_loss(den, z_lr, z_gt, torch.tensor([17, 803]), noise, pipe.encode_prompt(""), sched)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in trainable}
    finally:
        den.unet.disable_gradient_checkpointing()
        den.unet.eval()
        for _, prm in trainable:
            prm.requires_grad_(False)
            prm.grad = None


def test_stage1_backward_with_gradient_checkpointing_matches_without(pipe):
    loss_off, off = stage1_grads(pipe, checkpointing=False)
    loss_on, on = stage1_grads(pipe, checkpointing=True)
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    assert any(g.abs().max() > 0 for g in off.values())  # the SFT layers and the encoder do get gradients
    for name, g in off.items():  # recomputation replays the same float32 ops: equal up to rounding
        torch.testing.assert_close(on[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_per_sample_timesteps_equal_separate_calls(pipe):
    x, z, cond = inputs(pipe)
    with torch.no_grad():
        both = pipe.denoiser(x, torch.tensor([10, 900]), cond)
        first = pipe.denoiser(x[:1], 10, Conditioning(z[:1], cond.text))
        second = pipe.denoiser(x[1:], torch.tensor(900), Conditioning(z[1:], cond.text))
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=0, atol=1e-5)
    assert (first - second).abs().max() > 1e-3  # the timestep matters


def test_denoiser_keeps_no_state_on_the_unet(pipe):
    """Nothing is attached to the UNet: its plain forward is stock SD, and its state dict has no SFT keys."""
    assert not any(m._forward_hooks for m in pipe.unet.modules())
    assert not any("mlp_gamma" in k for k in pipe.unet.state_dict())


def test_two_pipelines_in_two_threads_match_sequential_runs(tiny_weights, pipe):
    other = tiny_pipeline(tiny_weights)
    x, z, cond = inputs(pipe)
    z2 = torch.flip(z, dims=(-1,))
    with torch.no_grad():
        expected = [pipe.denoiser(x, 500, cond), other.denoiser(x, 200, Conditioning(z2, cond.text))]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        den, t, c = (pipe.denoiser, 500, cond) if i == 0 else (other.denoiser, 200, Conditioning(z2, cond.text))
        start.wait()
        with torch.no_grad():
            for _ in range(2):
                results[i].append(den(x, t, c))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in (0, 1):
        assert len(results[i]) == 2
        for out in results[i]:
            torch.testing.assert_close(out, expected[i], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(pipe):
    """``fullgraph=True`` fails on any graph break (e.g. a hook or a host read per block). The ``aot_eager``
    backend traces the whole graph through dynamo and AOTAutograd without slow C++ code generation."""
    x, _, cond = inputs(pipe, n=1)
    compiled = torch.compile(pipe.denoiser, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        eager = pipe.denoiser(x, torch.tensor([400]), cond)
        got = compiled(x, torch.tensor([400]), cond)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_pipeline_compile_keeps_the_result_through_the_canvas(tiny_weights, one_thread):
    """``pipe.compile()`` swaps in the compiled denoiser; the canvas (padded tile batches) runs it unchanged,
    and one graph serves every call of every step: the timestep arrives as a tensor, not as a new constant."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    pipe = tiny_pipeline(tiny_weights)
    lr = noise_image(40, 48)  # 4 latent tiles in batches of 3: two calls a step, one shape
    run = lambda: pipe(lr, 4.0, 3, generator=torch.Generator().manual_seed(0), tile_batch_size=3,
                       output_type="pt").images
    eager = run()
    graphs = []
    counting = aot_autograd(fw_compiler=lambda gm, _: graphs.append(gm) or make_boxed_func(gm.forward))
    torch._dynamo.reset()
    assert pipe.compile(backend=counting) is pipe
    assert isinstance(pipe.denoiser, torch._dynamo.eval_frame.OptimizedModule)
    torch.testing.assert_close(run(), eager, rtol=0, atol=1e-4)
    assert len(graphs) == 1  # 6 calls over 3 timesteps, compiled once


def test_upscaler_load_compiles_on_request(tiny_weights):
    from stablesr.hub import ModelSpec
    from stablesr.service import Upscaler

    spec = ModelSpec(checkpoint=str(tiny_weights["ldm"]), cfw_checkpoint=str(tiny_weights["cfw"]),
                     config=str(tiny_weights["config"]), prompt_embeds=str(tiny_weights["prompt_embeds"]),
                     prediction_type="eps")
    plain = Upscaler.load(spec, "cpu", torch.float32, announce=False)
    compiled = Upscaler.load(spec, "cpu", torch.float32, announce=False, compile=True)
    assert not isinstance(plain.pipe.denoiser, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(compiled.pipe.denoiser, torch._dynamo.eval_frame.OptimizedModule)
