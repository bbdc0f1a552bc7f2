"""The shape of the code: rooms with one job each, arrows that only point down, no cycles, small files.

Every module under ``src/stablesr`` is parsed with ``ast`` (nothing is imported). A module may import
only from its own room or rooms of a lower rank; :data:`ALLOWED` narrows that further for some rooms.
A new top-level room must be given a rank here: an unknown one fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stablesr"
MAX_LINES = 400

#: Room (first name under ``stablesr``) -> rank, bottom to top.
RANKS: dict[str, int] = {
    "errors": 0, "config": 0, "presets": 0, "paths": 0,  # data types, pure data
    "models": 1,  # the networks
    "checkpoints": 2,  # loading and saving weights (never the pipeline)
    "diffusion": 3,  # schedules, samplers, noise, denoiser, guidance
    "tiling": 4,  # tile planning and blending, canvas sampling, tiled VAE
    "imaging": 5, "degradation": 5,  # geometry, colour, alpha, conversions; synthetic degradations
    "pipeline": 6,
    "imageio": 7,  # the only room that knows files
    "runtime": 8,  # device, distributed, memory, console, batch runner
    "hub": 9, "service": 9,  # model loading; the Upscaler that every front end calls
    "app": 10, "training": 10, "evaluation": 10, "testset": 10,  # features, each with a Python API
    "testing": 10, "golden": 10,
    "cli": 11, "__main__": 11,  # the command line: one module per command, over the rooms below
    "__init__": 12,  # the package's lazy public names
}

#: Rooms that may import from fewer rooms than their rank allows.
ALLOWED: dict[str, set[str]] = {
    "degradation": {"errors", "config", "imaging", "degradation"},
}


def module_name(path: Path) -> str:
    parts = ["stablesr", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py" or module == "stablesr"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never executed)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(n.lineno for n in ast.walk(child) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def imports(module: str) -> list[tuple[str, bool]]:
    """(imported stablesr module, runs at import time or call time) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    guarded = _type_checking_lines(tree)
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "stablesr"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "stablesr":
                continue
            for alias in node.names:  # `from .pkg import submodule` imports the submodule
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in MODULES else source)
        found += [(t, node.lineno not in guarded) for t in targets]
    return found


def test_every_room_has_a_rank() -> None:
    unknown = sorted({room(m) for m in MODULES} - RANKS.keys())
    assert not unknown, f"new rooms need a rank in tests/test_architecture.py: {unknown}"


def test_imports_only_point_down() -> None:
    upward = []
    for module in MODULES:
        here = room(module)
        for target, _ in imports(module):
            there = room(target)
            if target == "stablesr" or there not in RANKS or here not in RANKS:
                continue
            allowed = ALLOWED.get(here)
            if RANKS[there] > RANKS[here] or (allowed is not None and there not in allowed):
                upward.append(f"{module} -> {target} ({here} {RANKS[here]} -> {there} {RANKS[there]})")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, runs in imports(m) if runs and t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_files_are_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (at most {MAX_LINES}); split it by job"


def test_import_parser_resolves_relative_imports() -> None:
    """`from ..checkpoints.folder import x` and `from ..tiling import vae` resolve to the modules they name."""
    assert ("stablesr.checkpoints.folder", True) in imports("stablesr.pipeline.models")
    assert ("stablesr.tiling.vae", True) in imports("stablesr.pipeline.core")
    assert ("stablesr.pipeline.core", False) in imports("stablesr.pipeline.settings")  # under TYPE_CHECKING
