"""Converted folders: one subfolder per component (config.json + safetensors) and a ``model_index.json``.

Saving takes components and a :class:`~stablesr.config.ModelConfig`; loading returns them. The pipeline
is built on top (``StableSRPipeline.from_pretrained`` / ``save_pretrained``); this module never imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from diffusers import UNet2DConditionModel
from torch import nn

from ..config import ModelConfig
from ..errors import CheckpointError, MissingWeightsError
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder
from .components import ModelComponents

INDEX_FILE = "model_index.json"
PROMPT_FILE = "prompt_embeds.safetensors"
FORMAT_VERSION = 1
CLASS_NAME = "StableSRPipeline"  # what model_index.json says it holds


def save_folder(model: ModelComponents, directory: str | Path) -> Path:
    """Write ``model`` as a folder (atomically: a temporary sibling folder renamed into place)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, module in model.modules().items():
            module.save_pretrained(tmp / name, safe_serialization=True)
        pe: PromptEncoder = model.prompt_encoder
        if pe.has_text_encoder:
            pe("")  # make sure the empty-prompt embedding is cached in the folder
            pe.text_encoder().save_pretrained(tmp / "text_encoder", safe_serialization=True)
        if pe.tokenizer is not None:  # makes the folder self-sufficient for new prompts offline
            pe.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if pe.cache:
            pe.save(tmp / PROMPT_FILE)
        index = {"_class_name": CLASS_NAME, "format_version": FORMAT_VERSION,
                 "components": sorted(model.modules()), "config": model.config.to_dict(),
                 "text_encoder": pe.has_text_encoder}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if directory.exists():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
            elif not (directory / INDEX_FILE).is_file():
                raise CheckpointError(f"{directory}: exists and is not a stablesr model folder; not overwriting")
            else:
                shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


_COMPONENT_CLASSES: dict[str, type[nn.Module]] = {"unet": UNet2DConditionModel, "sft_adapter": SFTAdapter, "time_aware_encoder": TimeAwareEncoder,
                      "vae": CFWAutoencoderKL, "struct_vae": CFWAutoencoderKL}


def resolve_folder(path_or_repo: str | Path, *, revision: str | None = None, local_files_only: bool | None = None
                   ) -> Path:
    """A local folder, or a hub repo id downloaded into the Hugging Face cache."""
    path = Path(path_or_repo)
    if path.exists():
        if not (path / INDEX_FILE).is_file():
            raise CheckpointError(f"{path}: not a stablesr model folder (no {INDEX_FILE})")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_repo), revision=revision, local_files_only=bool(local_files_only)))
    except Exception as e:  # noqa: BLE001
        raise MissingWeightsError(
            f"{path_or_repo}: not a local folder and not available from the hub cache or network "
            f"({type(e).__name__}); download it with `hf download {path_or_repo}` or give a local folder"
        ) from None


def load_folder(path_or_repo: str | Path, *, revision: str | None = None, local_files_only: bool | None = None
                ) -> ModelComponents:
    """The components saved by :func:`save_folder`, from a local folder or a hub repository."""
    folder = resolve_folder(path_or_repo, revision=revision, local_files_only=local_files_only)
    index = json.loads((folder / INDEX_FILE).read_text())
    if index.get("_class_name") != CLASS_NAME:
        raise CheckpointError(f"{folder}: {INDEX_FILE} is not a StableSRPipeline index")
    modules = {}
    for name in index["components"]:
        if name not in _COMPONENT_CLASSES:
            raise CheckpointError(f"{folder}: unknown component {name!r}")
        modules[name] = _COMPONENT_CLASSES[name].from_pretrained(str(folder / name)).eval().requires_grad_(False)
    text_dir = folder / "text_encoder"

    def build_text_encoder():
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(str(text_dir)).eval().requires_grad_(False)

    tok_dir = folder / "tokenizer"

    def build_tokenizer():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(tok_dir))

    prompts = folder / PROMPT_FILE if (folder / PROMPT_FILE).is_file() else None
    cache = PromptEncoder.from_file(prompts).cache if prompts else {}
    prompt_encoder = PromptEncoder(cache, text_encoder=build_text_encoder if text_dir.is_dir() else None,
                                   tokenizer=build_tokenizer if tok_dir.is_dir() else None, source=prompts)
    return ModelComponents(modules["unet"], modules["sft_adapter"], modules["time_aware_encoder"], modules["vae"],
                           struct_vae=modules.get("struct_vae"), prompt_encoder=prompt_encoder,
                           config=ModelConfig.from_dict(index.get("config", {})))
