"""The OpenCLIP text tower converts to a transformers CLIPTextModel with the same penultimate-layer output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stablesr.checkpoints.convert import text_encoder_from_state
from stablesr.checkpoints.keymap import convert_text_key
from stablesr.models.text import EMPTY_PROMPT_IDS, PromptEncoder

WIDTH, HEADS, LAYERS, VOCAB, CTX = 64, 4, 3, 49408, 77


class Block(nn.Module):
    """An OpenCLIP-style residual attention block (pre-norm, fused in_proj, GELU MLP)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(WIDTH, 4 * WIDTH))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenClipText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, WIDTH) * 0.1)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(Block() for _ in range(LAYERS + 1))
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.randn(WIDTH, WIDTH))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def penultimate(self, ids):
        """What StableSR's FrozenOpenCLIPEmbedder(layer='penultimate') returns."""
        x = self.token_embedding(ids) + self.positional_embedding
        mask = torch.full((CTX, CTX), float("-inf")).triu(1)
        for block in self.transformer.resblocks[:LAYERS]:
            x = block(x, mask)
        return self.ln_final(x)


def test_openclip_tower_converts_numerically(tmp_path):
    torch.manual_seed(0)
    ref = OpenClipText().eval()
    for p in ref.parameters():  # non-trivial norms and biases
        if p.ndim == 1:
            p.data += torch.randn_like(p) * 0.1
    state = {}
    ignored = []
    for key, value in ref.state_dict().items():
        res = convert_text_key(key, value, LAYERS)
        if isinstance(res, str):
            assert res, f"unrecognised key {key}"
            ignored.append(key)
        else:
            state.update(res)
    assert sorted(ignored) == sorted(["text_projection", "logit_scale"] +
                                     [k for k in ref.state_dict() if k.startswith(f"transformer.resblocks.{LAYERS}.")])
    config = {"vocab_size": VOCAB, "hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "max_position_embeddings": CTX, "hidden_act": "gelu",
              "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0}
    model = text_encoder_from_state(state, config=config)
    ids = torch.tensor([EMPTY_PROMPT_IDS, [49406, 320, 1125, 539, 49407] + [0] * 72])
    with torch.no_grad():
        expected = ref.penultimate(ids)
        got = model(input_ids=ids).last_hidden_state
    assert (got - expected).abs().max() < 1e-5

    # The prompt cache computes the empty prompt once, without a tokenizer, and the text
    # encoder is built lazily on the first miss only.
    built = []

    def build():
        built.append(1)
        return model

    enc = PromptEncoder({}, text_encoder=build)
    assert built == []
    e1 = enc("")
    e2 = enc("")
    assert built == [1] and e1 is e2
    assert torch.allclose(e1[0], expected[0], atol=1e-5)
    enc.save(tmp_path / "embeds.safetensors")
    again = PromptEncoder.from_file(tmp_path / "embeds.safetensors")
    assert torch.equal(again("")[0], e1[0])


def test_computed_embeddings_persist_across_runs(tmp_path):
    calls = []

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, input_ids):
            calls.append(input_ids.tolist())
            return type("Out", (), {"last_hidden_state": input_ids[..., None].float() * self.w})()

    target = tmp_path / "cache" / "model.ckpt-1-2.safetensors"
    first = PromptEncoder({}, text_encoder=Fake, persist_to=target)
    emb = first("")
    assert target.is_file() and len(calls) == 1
    assert calls[0] == [EMPTY_PROMPT_IDS]  # the empty prompt needs no tokenizer
    second = PromptEncoder(PromptEncoder.from_file(target).cache, text_encoder=Fake, persist_to=target)
    assert torch.equal(second(""), emb) and len(calls) == 1  # served from the file, encoder never built


def test_a_file_that_is_not_prompt_embeddings_is_named_in_one_line(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    from stablesr.errors import CheckpointError

    (tmp_path / "notes.txt").write_text("hello")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "vector.safetensors"))
    for path in (tiny_weights["ldm"], tmp_path / "notes.txt", tmp_path / "vector.safetensors"):
        with pytest.raises(CheckpointError, match="not a prompt-embeddings") as err:
            PromptEncoder.from_file(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert PromptEncoder.from_file(tiny_weights["prompt_embeds"]).cache[""].shape[-1] == 32
