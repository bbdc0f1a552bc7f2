"""Replay golden test vectors made by running the official StableSR code on tiny random models.

Usage::

    python -m stablesr.golden ../shared/golden            # every case in index.json
    python -m stablesr.golden ../shared/golden -k canvas  # cases whose id contains "canvas"

A golden directory holds ``index.json`` (cases, configs, weights, tolerances), official-format
``.ckpt`` weights and official-style configs, and one safetensors file per case with its
``in.*`` inputs, ``noise.*`` recorded Gaussian draws and ``out.*`` expected outputs. Each case
is rebuilt here from those alone: the layer cases (encoder, UNet, CFW, colour fix, training loss)
with this package's modules, every script case (``_old``, ``oldcanvas_tile``, DDIM) by
``StableSRPipeline.__call__`` with that script's ``Quirks.official(script)``; the recorded draws
are replayed in the official order, and every ``out.*`` compared in float64
against the case's tolerance. One line per case, then ``N passed, M failed``; the exit status is
non-zero if any case failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoints.convert import LDMParts, load_cfw, load_ldm, map_official_keys
from ..checkpoints.official_config import LDMSpec, cfw_vae_config, read_config_file
from ..config import ModelConfig, Quirks
from ..diffusion.denoiser import StableSRDenoiser, TextConditioning
from ..diffusion.sampling import RecordedNoise
from ..diffusion.schedules import DiffusionSchedule
from ..imaging.color import apply_color_fix
from ..models.cfw import CFWAutoencoderKL
from ..pipeline import StableSRPipeline
from ..training.losses import stage1_loss


@dataclass
class GoldenModels:
    """The tiny models of one golden directory (eps and v share the LDM weights)."""

    parts: LDMParts
    specs: dict[str, LDMSpec]
    vae: CFWAutoencoderKL
    denoiser: StableSRDenoiser

    @classmethod
    def load(cls, root: Path, index: dict) -> GoldenModels:
        def weight(name: str) -> Path:
            files = index["weights"][name]
            files = [files] if isinstance(files, str) else files
            return root / next((f for f in files if f.endswith(".ckpt")), files[0])

        configs = index["configs"]
        specs = {"eps": LDMSpec.from_official(read_config_file(root / configs["ldm_eps"]))}
        specs["v"] = (LDMSpec.from_official(read_config_file(root / configs["ldm_v"])) if "ldm_v" in configs
                      else dataclasses.replace(specs["eps"], parameterization="v"))
        parts = load_ldm(weight("ldm"), specs["eps"])
        vae = load_cfw(weight("cfw"), cfw_vae_config(read_config_file(root / configs["cfw"])))
        return cls(parts, specs, vae, StableSRDenoiser(parts.unet, parts.sft_adapter, parts.time_aware_encoder))

    def pipeline(self, parameterization: str, sample_size: int) -> StableSRPipeline:
        """A pipeline over these models (official-format weights loaded by the same code as the product)."""
        spec = self.specs[parameterization]
        config = ModelConfig(parameterization=spec.parameterization, sample_size=sample_size,
                             scale_factor=spec.scale_factor, linear_start=spec.linear_start,
                             linear_end=spec.linear_end)
        pipe = StableSRPipeline(self.parts.unet, self.parts.sft_adapter, self.parts.time_aware_encoder, self.vae,
                                struct_vae=self.parts.struct_vae, config=config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def struct_vae(self) -> CFWAutoencoderKL:
        return self.parts.struct_vae or self.vae


# Official script defaults (OFFICIAL.md 5.9), used for any parameter a case does not state.
SCRIPT_DEFAULTS: dict[str, dict] = {
    "ddpm_old": {"ddpm_steps": 1000, "dec_w": 0.5, "colorfix": "nofix"},
    "canvas_tile": {"ddpm_steps": 1000, "dec_w": 0.5, "colorfix": "nofix", "input_size": 512, "upscale": 4.0,
                    "tile_overlap": 32, "n_samples": 1, "vqgantile_size": 1280, "vqgantile_stride": 1000},
    "ddim": {"ddim_steps": 50, "eta": 0.0, "scale": 7.0, "dec_w": 0.5, "colorfix": "nofix"},
}


def _color_fix(p: dict) -> str:
    """The scripts apply a fix only for ``adain``/``wavelet``; any other value means none."""
    return p.get("colorfix") if p.get("colorfix") in ("adain", "wavelet") else "none"


Flow = Callable[[GoldenModels, dict, dict[str, torch.Tensor], RecordedNoise], dict[str, torch.Tensor]]


def _text(t: dict[str, torch.Tensor], p: dict) -> TextConditioning:
    cond = t["in.text_context.positive"] if p.get("use_posi_prompt") else t["in.text_context.empty"]
    if p.get("use_negative_prompt"):
        return TextConditioning(cond, t["in.text_context.negative"], float(p.get("scale", 7.0)))
    return TextConditioning(cond)


def flow_struct_encoder(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    return {f"out.{k}": v for k, v in m.parts.time_aware_encoder(t["in.x"], t["in.t"]).items()}


def flow_unet(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    feats = {k[len("in.struct_cond."):]: v for k, v in t.items() if k.startswith("in.struct_cond.")}
    return {"out.model_output": m.denoiser.steered(t["in.x_t"], t["in.t"], t["in.context"], feats)}


def flow_cfw(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    enc = m.vae.encode_with_features(t["in.image"])
    out = {"out.moments": enc.moments, "out.posterior_mean": enc.mean, "out.posterior_std": enc.std}
    out |= {f"out.enc_fea.{i}": f for i, f in enumerate(enc.features)}
    for w in p.get("ws", [0.0, 0.5, 1.0]):
        out[f"out.decoded.w{float(w):g}"] = m.vae.decode_fused(t["in.z"], enc.features, float(w))
    return out


def flow_colorfix(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    return {f"out.{k}": apply_color_fix(t["in.content"], t["in.style"], k) for k in ("adain", "wavelet")}


def _through_pipeline(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise, quirks: Quirks, sample_size: int,
                      upscale: float = 1.0, **call: object) -> dict[str, torch.Tensor]:
    """One official script's case run by ``StableSRPipeline.__call__`` with that script's quirks.

    ``out.x_decoded`` (the decoder output before the colour fix, which the pipeline does not return)
    is the pipeline's latent decoded by the same CFW decoder with the LR's features.
    """
    text = _text(t, p)
    pipe = m.pipeline(p.get("parameterization", "eps"), sample_size)
    lr = t["in.lr_image"]
    result = pipe((lr + 1) / 2, upscale, fidelity=float(p["dec_w"]), color_fix=_color_fix(p), prompt_embeds=text.cond,
                  negative_prompt_embeds=text.uncond, guidance_scale=text.scale, noise=noise,
                  quirks=quirks, output_type="pt", **call)  # type: ignore[arg-type]
    out = {"out.x_final": result.images}
    if result.latents is not None:
        out["out.samples"] = result.latents
        if tuple(result.latents.shape[-2:]) == tuple(s // 8 for s in lr.shape[-2:]):
            features = pipe.vae.encode_with_features(lr).features
            out["out.x_decoded"] = pipe.vae.decode_fused(result.latents / pipe.config.scale_factor, features,
                                                         float(p["dec_w"]))
    return out


def flow_ddpm_old(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    """``sr_val_ddpm_text_T_vqganfin_old.py``: fixed size, CFW-encoder structure latent, pure-noise start, DDPM."""
    return _through_pipeline(m, p, t, noise, Quirks.official("old"), int(t["in.lr_image"].shape[-1]), num_inference_steps=int(p["ddpm_steps"]),
                             sampler="ddpm", init="noise", vae_tile_size=None)


def flow_canvas_tile(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    """``sr_val_ddpm_text_T_vqganfin_oldcanvas_tile.py``: the tile script's geometry, latent canvas and pixel tiles."""
    size, stride = int(p["vqgantile_size"]), int(p["vqgantile_stride"])
    if t["in.lr_image"].shape[0] != 1:
        raise ValueError("the official canvas sampler mixes up the images of a batch; only batch 1 is replayed")
    return _through_pipeline(m, p, t, noise, Quirks.official("tile"), int(p["input_size"]), float(p["upscale"]),
                             num_inference_steps=int(p["ddpm_steps"]), sampler="ddpm", init="noised_lr",
                             tile_size=int(p["input_size"]) // 8, tile_overlap=int(p["tile_overlap"]),
                             tile_batch_size=int(p.get("n_samples", 1)), vae_tile_size=size, vae_tile_overlap=size - stride)


def flow_ddim(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    """``sr_val_ddim_text_T_negativeprompt.py`` (fixed size, noised-LR start) and its ``_canvas_tile`` twin
    (direct branch: the checkpoint's VAE, pure-noise start, latent tiles)."""
    canvas = p.get("canvas")
    steps = {"num_inference_steps": int(p["ddim_steps"]), "sampler": "ddim", "eta": float(p["eta"])}
    if not canvas:
        return _through_pipeline(m, p, t, noise, Quirks.official("ddim"), int(t["in.lr_image"].shape[-1]), init="noised_lr",
                                 vae_tile_size=None, **steps)
    tile = int(canvas["tile_size"])
    # The case holds the direct branch's input, already padded by the script: no second padding.
    quirks = dataclasses.replace(Quirks.official("ddim_canvas_tile"), geometry="exact")
    return _through_pipeline(m, p, t, noise, quirks, tile * 8, init="noise", tile_size=tile,
                             tile_overlap=int(canvas["tile_overlap"]), tile_batch_size=int(canvas.get("n_samples", 1)),
                             vae_tile_size=1280, vae_tile_overlap=280, **steps)


def flow_train(m: GoldenModels, p: dict, t: dict, noise: RecordedNoise) -> dict[str, torch.Tensor]:
    """Stage-1 loss and gradients (``LatentDiffusionSRTextWT.forward`` in training mode)."""
    spec = m.specs[p.get("parameterization", "eps")]
    trainable = [*m.parts.time_aware_encoder.parameters(), *m.parts.sft_adapter.parameters()]
    meta = p.get("_meta", {})
    order = meta.get("params_requires_grad") or meta.get("params_with_grad")
    names = official_parameter_names(m.parts, order or [])
    for prm in trainable:
        prm.requires_grad_(True)
        prm.grad = None
    try:
        with torch.enable_grad():
            z = t["in.z"]
            sched = DiffusionSchedule.respaced(spec.time_replace, spec.linear_start, spec.linear_end)
            loss, logs = stage1_loss(m.denoiser, z, t["in.z_gt"], t["in.t"], noise.draw(z.shape, like=z),
                                     t["in.text_context.empty"], sched, spec.parameterization)
            loss.backward()
        out = {"out.loss": loss.detach()} | {f"out.loss_dict.{k.replace('/', '.')}": v for k, v in logs.items()}
        out["out.grad_norms"] = torch.stack([names[n].grad.double().norm() for n in order or names])
        for n in p.get("full_grads", []):
            out[f"out.grad.{n}"] = names[n].grad.clone()
        return out
    finally:
        for prm in trainable:
            prm.requires_grad_(False)
            prm.grad = None


def official_parameter_names(parts: LDMParts, official: list[str]) -> dict[str, torch.nn.Parameter]:
    """Official stage-1 parameter names -> our parameters, through the checkpoint key map itself."""
    ours = {"time_aware_encoder": dict(parts.time_aware_encoder.named_parameters()),
            "sft_adapter": dict(parts.sft_adapter.named_parameters())}
    return {name: ours[c][k] for name, (c, k) in map_official_keys(official, parts.spec).items()}


FLOWS: dict[str, Flow] = {
    "struct_encoder": flow_struct_encoder, "unet": flow_unet, "cfw": flow_cfw, "colorfix": flow_colorfix,
    "ddpm_old": flow_ddpm_old, "canvas_tile": flow_canvas_tile, "ddim": flow_ddim, "train": flow_train,
}


@dataclass
class CaseResult:
    case_id: str
    passed: bool
    max_error: float
    detail: str
    seconds: float


def run_case(models: GoldenModels, root: Path, case: dict) -> CaseResult:
    start = time.perf_counter()
    tensors = load_file(str(root / case["file"]))
    draws = sorted((k for k in tensors if k.startswith("noise.")), key=lambda k: int(k.split(".")[1]))
    noise = RecordedNoise([tensors[k] for k in draws])
    params = SCRIPT_DEFAULTS.get(case["kind"], {}) | dict(case.get("params", {})) | {"_meta": case.get("meta", {})}
    flow = FLOWS.get(case["kind"])
    if flow is None:
        return CaseResult(case["id"], False, float("inf"), f"unknown case kind {case['kind']!r}", 0.0)
    try:
        with torch.no_grad():
            got = flow(models, params, tensors, noise)
    except Exception as e:  # noqa: BLE001 - report and continue with the next case
        return CaseResult(case["id"], False, float("inf"), f"error: {type(e).__name__}: {e}",
                          time.perf_counter() - start)
    worst, worst_name, failed = 0.0, "", []
    tolerances = case.get("tolerance", {})
    for name in sorted(k for k in tensors if k.startswith("out.")):
        if name not in got:
            failed.append(f"{name} not produced")
            continue
        expected, actual = tensors[name].double(), got[name].detach().double()
        if tuple(expected.shape) != tuple(actual.shape):
            failed.append(f"{name} shape {tuple(actual.shape)} != {tuple(expected.shape)}")
            continue
        err = (actual - expected).abs().max().item() if expected.numel() else 0.0
        tol = tolerances.get(name, 1e-4)
        atol = float(tol.get("atol", 1e-4) if isinstance(tol, dict) else tol)
        if not err <= atol:
            failed.append(f"{name} err {err:.3g} > atol {atol:.3g}")
        if err > worst:
            worst, worst_name = err, name
    if noise.position != len(noise.draws):
        failed.append(f"used {noise.position} of {len(noise.draws)} recorded draws")
    detail = "; ".join(failed) if failed else f"worst {worst_name}"
    return CaseResult(case["id"], not failed, worst, detail, time.perf_counter() - start)


def run(root: str | Path, select: str | None = None, out=sys.stdout) -> tuple[int, int]:
    """Run the golden cases under ``root``; print one line per case and the summary. Returns (passed, failed)."""
    root = Path(root)
    index = json.loads((root / "index.json").read_text())
    torch.manual_seed(0)
    models = GoldenModels.load(root, index)
    passed = failed = 0
    for case in index["cases"]:
        if select and select not in case["id"]:
            continue
        r = run_case(models, root, case)
        passed += r.passed
        failed += not r.passed
        print(f"{'PASS' if r.passed else 'FAIL'} {r.case_id:<28} max_abs_err={r.max_error:.3g}  ({r.detail}, "
              f"{r.seconds:.1f}s)", file=out, flush=True)
    print(f"{passed} passed, {failed} failed", file=out, flush=True)
    return passed, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stablesr.golden", description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", help="golden directory containing index.json")
    ap.add_argument("-k", dest="select", help="only cases whose id contains this string")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    _, failed = run(args.directory, args.select)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
