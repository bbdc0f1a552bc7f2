"""``stablesr eval`` and ``stablesr compare``: argument parsing, printing, exit codes.

Exit codes: 0 all images scored; 1 some images or metrics failed (listed at the end); 2 a usage or
input problem, printed as one line (never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ._files import StableSRError
from .metrics import CATALOGUE, DEFAULT_METRICS, parse_metric_list
from .report import _atomic_write, write_report
from .runner import EvalResult, EvalSettings, evaluate

__all__ = ["main", "register", "run_compare", "run_eval"]


class _UsageError(Exception):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help=f"comma-separated, or 'all'; from: {', '.join(CATALOGUE)} (default: {','.join(DEFAULT_METRICS)};"
                        " without --gt only its no-reference ones)")
    p.add_argument("--crop-border", type=int, default=0, metavar="N",
                   help="pixels removed from each edge before every metric (BasicSR's crop_border; default 0)")
    p.add_argument("--resize-gt", action="store_true", help="resize GT (bicubic) to the prediction size instead of failing")
    p.add_argument("--lr", metavar="DIR", help="low-resolution inputs, shown in the report's crop grid")
    p.add_argument("--json", metavar="FILE", help="write scores as JSON")
    p.add_argument("--report", metavar="FILE", help="write a report: .html (self-contained) or .md (+ PNGs)")
    p.add_argument("--device", default="cpu", help="torch device for the learned metrics (default: cpu)")
    p.add_argument("--niqe-params", metavar="NPZ", help="BasicSR's niqe_pris_params.npz (default: found automatically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``eval`` and ``compare`` to a CLI's subparsers (each sets ``func``)."""
    p = subparsers.add_parser("eval", parents=list(parents), help="score predictions against ground truth",
                              description="Score a folder of predictions against GT by file stem (BasicSR protocol).")
    p.add_argument("--pred", required=True, metavar="DIR", help="predictions (stems match GT; _out/_x4 suffixes ok)")
    p.add_argument("--gt", metavar="DIR", help="ground truth (without it only no-reference metrics run)")
    p.add_argument("--name", help="method name shown in tables (default: the folder name)")
    _add_common(p)
    p.set_defaults(func=run_eval)
    c = subparsers.add_parser("compare", parents=list(parents), help="score several methods side by side",
                              description="The same metrics for several prediction folders against one GT folder.")
    c.add_argument("dirs", nargs="+", metavar="DIR", help="one prediction folder per method")
    c.add_argument("--gt", required=True, metavar="DIR", help="ground truth")
    c.add_argument("--names", metavar="LIST", help="comma-separated method names (default: folder names)")
    _add_common(c)
    c.set_defaults(func=run_compare)


def _settings(args: argparse.Namespace) -> EvalSettings:
    if args.metrics is None:
        metrics = [m for m in DEFAULT_METRICS if args.gt or CATALOGUE[m].kind == "nr"]
    else:
        try:
            metrics = parse_metric_list(args.metrics)
        except ValueError as exc:
            raise _UsageError(f"--metrics: {exc}") from None
    if args.crop_border < 0:
        raise _UsageError(f"--crop-border must be >= 0, got {args.crop_border}")
    if args.report and Path(args.report).suffix.lower() not in (".html", ".htm", ".md"):
        raise _UsageError(f"--report {args.report}: must end in .html or .md")
    if args.niqe_params and not Path(args.niqe_params).is_file():
        raise _UsageError(f"--niqe-params {args.niqe_params}: no such file")
    for opt in ("gt", "lr"):
        folder = getattr(args, opt, None)
        if folder and not Path(folder).is_dir():
            raise _UsageError(f"--{opt} {folder}: not a directory")
    return EvalSettings(tuple(metrics), args.crop_border, args.resize_gt, args.device, args.niqe_params,
                        progress=not args.no_progress and sys.stderr.isatty())


def _print_table(results: Sequence[EvalResult]) -> None:
    metrics = list(dict.fromkeys(m for r in results for m in r.metrics))
    width = max(8, *(len(r.name) for r in results))
    print(f"{'method':<{width}}  " + "  ".join(f"{m:>9}" for m in metrics))
    for r in results:
        vals = [r.mean.get(m) for m in metrics]
        print(f"{r.name:<{width}}  " + "  ".join(
            f"{'-':>9}" if v is None else f"{'inf':>9}" if math.isinf(v) else f"{v:>9.4f}" for v in vals))


def _finish(results: Sequence[EvalResult], args: argparse.Namespace, payload: dict) -> int:
    _print_table(results)
    for r in results:
        tag = f"[{r.name}] " if len(results) > 1 else ""
        for n in r.notes:
            print(f"note: {tag}{n}", file=sys.stderr)
        for k, v in r.unavailable.items():
            print(f"unavailable: {tag}{k}: {v}", file=sys.stderr)
    if args.json:
        _atomic_write(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode())
        print(f"wrote {args.json}", file=sys.stderr)
    if args.report:
        write_report(results, args.report, lr_dir=args.lr)
        print(f"wrote {args.report}", file=sys.stderr)
    failures = [f for r in results for f in r.failures]
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} problem(s); see the error lines above", file=sys.stderr)
    return 1 if failures else 0


def run_eval(args: argparse.Namespace) -> int:
    """``stablesr eval``: returns the exit code."""
    try:
        settings = _settings(args)
        result = evaluate(args.pred, args.gt, settings, name=args.name)
        return _finish([result], args, result.to_json())
    except (_UsageError, StableSRError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_compare(args: argparse.Namespace) -> int:
    """``stablesr compare``: returns the exit code. JSON: ``{"methods": [names], "results": {name: eval JSON}}``."""
    try:
        settings = _settings(args)
        names = [n.strip() for n in args.names.split(",")] if args.names else [Path(d).name for d in args.dirs]
        if len(names) != len(args.dirs):
            raise _UsageError(f"--names gives {len(names)} name(s) for {len(args.dirs)} folder(s)")
        if len(set(names)) != len(names):
            raise _UsageError(f"method names must differ: {', '.join(names)} (use --names)")
        results = [evaluate(d, args.gt, settings, name=n) for d, n in zip(args.dirs, names)]
        payload = {"methods": names, "results": {r.name: r.to_json() for r in results}}
        return _finish(results, args, payload)
    except (_UsageError, StableSRError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stablesr.evaluation {eval,compare} ...``."""
    parser = argparse.ArgumentParser(prog="python -m stablesr.evaluation", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line error and the usage
        return int(exc.code or 0)
    return int(args.func(args))
