"""The official scripts' flag spellings, so that command lines copied from the official README run as they are.

``python scripts/sr_val_ddpm_text_T_vqganfin_oldcanvas.py --config C --ckpt K --vqgan_ckpt V --init-img IN
--outdir OUT --ddpm_steps 200 --dec_w 0.5 --colorfix_type adain --upscale 4.0`` becomes ``stablesr upscale``
followed by the same flags. Each official flag maps to our concept (OFFICIAL.md 5.9):

=========================  ==========================================================================
``--init-img DIR``         an input (file, folder or glob), as the positional INPUT
``--outdir DIR``           ``-o``
``--ckpt`` / ``--vqgan_ckpt``  ``--checkpoint`` / ``--cfw-checkpoint``; ``--config`` as ours
``--ddpm_steps N``         ``--steps N`` (DDPM); ``--ddim_steps N``: ``--steps N --sampler ddim``
``--ddim_eta E``           ``--eta E``
``--dec_w W``              ``-w/--fidelity W``
``--colorfix_type T``      ``--color-fix T`` (``nofix`` = ``none``)
``--upscale X``            ``-s/--scale X``
``--scale G``              with ``--init-img`` on the line (an official command): ``--guidance-scale G``
``--use_negative_prompt``  the scripts' negative prompt, guidance 7 unless ``--scale`` says otherwise
``--use_posi_prompt``      the scripts' positive prompt
``--input_size N``         ``--sample-size N`` (the model's native size)
``--vqgantile_size N``     ``--vae-tile N``; ``--vqgantile_stride S``: ``--vae-tile-overlap N-S``
``--tile_overlap N``       ``--tile-overlap N``; ``--seed`` as ours; ``--precision autocast|full``: fp16/fp32
``--n_samples N``          accepted; images are always processed one by one (same results)
=========================  ==========================================================================

Which script a copied line came from is not on it: it runs with our defaults, so a line without
``--upscale`` upscales x4 (as the tile scripts do). ``--quirks official:old`` (or ``ddim``, ``oldcanvas``,
``face``, ...) adds that script's behaviour, e.g. the ``_old`` script's fixed-size square output.

Flags the scripts parse but never use (``--C``, ``--f``, ``--n_iter``, ``--strength``, ``--skip_grid``,
``--fixed_code``, ``--facesr``) are accepted and ignored. ``--ref-img`` is ``--reference`` (face
reference guidance, one reference per input with the same file name).
"""

from __future__ import annotations

import argparse

from ..errors import UsageError

OFFICIAL_GUIDANCE = 7.0  # the DDIM scripts' --scale default
_INPUT_FLAGS = ("--init-img", "--init_img")


def rewrite_official(argv: list[str]) -> list[str]:
    """Flags whose official meaning clashes with ours, rewritten before parsing (only in an official command).

    An official command is one naming ``--init-img``; there ``--scale`` is the guidance scale (ours is the
    upscale factor, which official commands spell ``--upscale``) and ``--ddim_steps`` selects DDIM.

    Example:
        >>> rewrite_official(["--init-img", "in", "--scale", "7", "--ddim_steps", "20"])
        ['--init-img', 'in', '--guidance-scale', '7', '--sampler', 'ddim', '--steps', '20']
        >>> rewrite_official(["in.png", "--scale", "2"])
        ['in.png', '--scale', '2']
    """
    if "--" in argv:
        head, tail = argv[:argv.index("--")], argv[argv.index("--"):]
    else:
        head, tail = argv, []
    official = any(t.split("=", 1)[0] in _INPUT_FLAGS for t in head)
    out: list[str] = []
    for token in head:
        name, eq, value = token.partition("=")
        if official and name == "--scale":
            out.append("--guidance-scale" + eq + value)
        elif name in ("--ddim_steps", "--ddim-steps"):
            out += ["--steps" + eq + value, "--sampler", "ddim"] if eq else ["--sampler", "ddim", "--steps"]
        else:
            out.append(token)
    return out + tail  # "--ddim_steps N" became "--sampler ddim --steps N": N still follows "--steps"


def add_official_flags(p: argparse.ArgumentParser) -> None:
    """The official spellings that are not plain aliases of one of our flags (hidden from --help)."""
    hide = argparse.SUPPRESS
    p.add_argument("--init-img", action="append", default=[], metavar="DIR", help=hide)
    p.add_argument("--n-samples", type=int, default=None, help=hide)
    p.add_argument("--vqgantile-stride", type=int, default=None, metavar="PX", help=hide)
    p.add_argument("--use-negative-prompt", action="store_true", help=hide)
    p.add_argument("--use-posi-prompt", action="store_true", help=hide)
    p.add_argument("--ref-img", default=None, help=hide)
    for unused in ("--C", "--f", "--n-iter", "--strength", "--n-rows"):
        p.add_argument(unused, default=None, help=hide, dest=f"unused_{unused.strip('-').replace('-', '_')}")
    for unused in ("--skip-grid", "--skip-save", "--fixed-code", "--facesr", "--save-input"):
        p.add_argument(unused, action="store_true", help=hide, dest=f"unused_{unused.strip('-').replace('-', '_')}")


def apply_official(args: argparse.Namespace) -> None:
    """Fold the official flags into ours (in place); conflicts are usage errors."""
    from ..pipeline.settings import NEGATIVE_PROMPT, POSITIVE_PROMPT

    args.inputs = [*args.inputs, *args.init_img]
    if args.ref_img is not None:
        if args.reference is not None and args.reference != args.ref_img:
            raise UsageError("give --ref-img or --reference, not both")
        args.reference = args.ref_img
    if args.use_posi_prompt:
        if args.prompt:
            raise UsageError("--use_posi_prompt sets the official positive prompt; do not give --prompt too")
        args.prompt = POSITIVE_PROMPT
    if args.use_negative_prompt:
        if args.negative_prompt is not None:
            raise UsageError("--use_negative_prompt sets the official negative prompt; do not give "
                             "--negative-prompt too")
        args.negative_prompt = NEGATIVE_PROMPT
        if args.guidance_scale is None:
            args.guidance_scale = OFFICIAL_GUIDANCE
    if args.vqgantile_stride is not None:
        tile = args.vae_tile
        if not tile or not 0 < args.vqgantile_stride <= tile:
            raise UsageError(f"--vqgantile_stride {args.vqgantile_stride}: must be in 1..--vqgantile_size "
                             f"({tile or 'not set'})")
        if args.vae_tile_overlap is not None:
            raise UsageError("give --vqgantile_stride or --vae-tile-overlap, not both")
        args.vae_tile_overlap = tile - args.vqgantile_stride


def precision(text: str) -> str:
    """``--precision``: ours (fp32/fp16/bf16) or the scripts' (``autocast`` = fp16, ``full`` = fp32)."""
    return {"autocast": "fp16", "full": "fp32"}.get(text.strip().lower(), text.strip().lower())


def color_fix(text: str) -> str:
    """``--color-fix`` / ``--colorfix_type``: ``nofix`` is the scripts' word for ``none``."""
    value = text.strip().lower()
    return "none" if value == "nofix" else value
