"""Where stablesr keeps its own small files (not the weights, which live in the Hugging Face cache)."""

from __future__ import annotations

import os
from pathlib import Path


def stablesr_home() -> Path:
    """``$STABLESR_HOME``, else ``$XDG_CACHE_HOME/stablesr``, else ``~/.cache/stablesr`` (read at call time)."""
    if os.environ.get("STABLESR_HOME"):
        return Path(os.environ["STABLESR_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stablesr"


def prompt_cache_file(checkpoint: str | os.PathLike[str]) -> Path:
    """Cache file for a checkpoint's prompt embeddings, keyed by its name, size and modification time."""
    st = Path(checkpoint).stat()
    return stablesr_home() / "prompt_embeds" / f"{Path(checkpoint).name}-{st.st_size}-{st.st_mtime_ns}.safetensors"
