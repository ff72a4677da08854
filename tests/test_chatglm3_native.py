"""Native ChatGLM3 model: checkpoint layout, math against an independent reference, cache, save/load, training."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from adapterkit_plugins.chatglm3.modeling_chatglm import ChatGLMConfig, ChatGLMForConditionalGeneration

DATA = Path(__file__).parent / "data" / "chatglm3-6b"

TINY = dict(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    kv_channels=16,
    multi_query_attention=True,
    multi_query_group_num=2,
    ffn_hidden_size=96,
    padded_vocab_size=128,
    add_qkv_bias=True,
    seq_length=64,
)


def official_config_dict() -> dict:
    return json.loads((DATA / "config.json").read_text())


def official_index() -> dict:
    return json.loads((DATA / "pytorch_model.bin.index.json").read_text())


def tiny_config(**overrides) -> ChatGLMConfig:
    """The official config.json with tiny sizes: every other field (and the extra keys) as released."""
    d = official_config_dict()
    d.pop("torch_dtype")
    d.update(TINY)
    d.update(overrides)
    return ChatGLMConfig(**d)


def tiny_model(seed: int = 0, scale: bool = True, **overrides) -> ChatGLMForConditionalGeneration:
    """A tiny model; with scale=True the weights are O(1) so attention and rotary visibly shape the logits."""
    torch.manual_seed(seed)
    model = ChatGLMForConditionalGeneration(tiny_config(**overrides)).eval()
    if scale:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("layernorm.weight"):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                elif name.endswith(".bias"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
                elif "word_embeddings" in name:
                    p.copy_(torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    return model


def expected_layout(cfg: ChatGLMConfig) -> dict:
    """Tensor names (from the official index, re-numbered for cfg's depth) and the shapes the config implies."""
    names = official_index()["weight_map"]
    d, h, q = cfg.kv_channels, cfg.hidden_size, cfg.num_attention_heads * cfg.kv_channels
    shapes = {
        "transformer.embedding.word_embeddings.weight": (cfg.padded_vocab_size, h),
        "transformer.rotary_pos_emb.inv_freq": (d // 4,),
        "transformer.encoder.final_layernorm.weight": (h,),
        "transformer.output_layer.weight": (cfg.padded_vocab_size, h),
        "input_layernorm.weight": (h,),
        "self_attention.query_key_value.weight": (q + 2 * cfg.multi_query_group_num * d, h),
        "self_attention.query_key_value.bias": (q + 2 * cfg.multi_query_group_num * d,),
        "self_attention.dense.weight": (h, q),
        "post_attention_layernorm.weight": (h,),
        "mlp.dense_h_to_4h.weight": (2 * cfg.ffn_hidden_size, h),
        "mlp.dense_4h_to_h.weight": (h, cfg.ffn_hidden_size),
    }
    out = {}
    for name in names:
        m = re.fullmatch(r"transformer\.encoder\.layers\.(\d+)\.(.+)", name)
        if m is None:
            out[name] = shapes[name]
        elif int(m.group(1)) < cfg.num_layers:
            out[name] = shapes[m.group(2)]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# An independent reference written from the equations, on one unpadded sequence, in float64.
# ---------------------------------------------------------------------------------------------------------------------


def reference_logits(sd: dict, cfg: ChatGLMConfig, ids: list[int], rotary: str = "interleaved") -> torch.Tensor:
    w = {k: v.detach().double() for k, v in sd.items()}
    T, nh, g, d, eps = len(ids), cfg.num_attention_heads, cfg.multi_query_group_num, cfg.kv_channels, cfg.layernorm_epsilon
    rot = d // 2  # rotated channels per head

    def rms(x, weight):
        return weight * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def rotation(t: int) -> torch.Tensor:
        """d x d matrix rotating position t: 2x2 blocks on channel pairs, identity on the last d/2 channels."""
        R = torch.eye(d, dtype=torch.float64)
        for i in range(rot // 2):
            angle = t * (10000.0 * cfg.rope_ratio) ** (-2 * i / rot)
            c, s = math.cos(angle), math.sin(angle)
            a, b = (2 * i, 2 * i + 1) if rotary == "interleaved" else (i, i + rot // 2)  # "half": a wrong variant
            R[a, a], R[a, b], R[b, a], R[b, b] = c, -s, s, c
        return R

    Rs = [rotation(t) for t in range(T)]
    x = w["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)]
    for n in range(cfg.num_layers):
        p = f"transformer.encoder.layers.{n}."
        hcur = rms(x, w[p + "input_layernorm.weight"])
        qkv = hcur @ w[p + "self_attention.query_key_value.weight"].T + w[p + "self_attention.query_key_value.bias"]
        ctx = torch.zeros(T, nh * d, dtype=torch.float64)
        for head in range(nh):
            grp = head // (nh // g)
            qh = qkv[:, head * d : (head + 1) * d]
            kh = qkv[:, nh * d + grp * d : nh * d + (grp + 1) * d]
            vh = qkv[:, nh * d + g * d + grp * d : nh * d + g * d + (grp + 1) * d]
            qh = torch.stack([Rs[t] @ qh[t] for t in range(T)])
            kh = torch.stack([Rs[t] @ kh[t] for t in range(T)])
            for t in range(T):
                scores = torch.stack([qh[t] @ kh[s] for s in range(t + 1)]) / math.sqrt(d)
                probs = torch.exp(scores - scores.max())
                probs = probs / probs.sum()
                ctx[t, head * d : (head + 1) * d] = (probs[:, None] * vh[: t + 1]).sum(0)
        x = x + ctx @ w[p + "self_attention.dense.weight"].T
        hcur = rms(x, w[p + "post_attention_layernorm.weight"])
        up = hcur @ w[p + "mlp.dense_h_to_4h.weight"].T
        a, b = up[:, : cfg.ffn_hidden_size], up[:, cfg.ffn_hidden_size :]
        x = x + (a * torch.sigmoid(a) * b) @ w[p + "mlp.dense_4h_to_h.weight"].T
    x = rms(x, w["transformer.encoder.final_layernorm.weight"])
    return x @ w["transformer.output_layer.weight"].T


# ---------------------------------------------------------------------------------------------------------------------
# (a) layout
# ---------------------------------------------------------------------------------------------------------------------


def test_config_from_official_json_and_aliases():
    cfg = ChatGLMConfig(**official_config_dict())  # auto_map, _name_or_path, torch_dtype... are tolerated
    assert cfg.model_type == "chatglm"
    assert (cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size) == (28, 65024, 13696)
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.max_position_embeddings) == (128, 2, 8192)
    assert cfg.multi_query_attention and cfg.add_qkv_bias and not cfg.add_bias_linear and cfg.rmsnorm
    assert cfg.tie_word_embeddings is False and cfg.rope_ratio == 1
    assert ChatGLMConfig(num_hidden_layers=3, vocab_size=99).num_layers == 3
    assert ChatGLMConfig(num_hidden_layers=3, vocab_size=99).padded_vocab_size == 99


def test_tiny_state_dict_matches_official_layout():
    model = tiny_model(scale=False)
    cfg = model.config
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_layout(cfg)
    layer = model.transformer.encoder.layers[1]
    assert isinstance(layer.mlp.dense_4h_to_h, torch.nn.Linear)
    assert isinstance(layer.self_attention.query_key_value, torch.nn.Linear)
    assert model.get_input_embeddings() is model.transformer.embedding.word_embeddings
    assert model.get_output_embeddings() is model.transformer.output_layer
    assert model.transformer.output_layer.weight.data_ptr() != model.transformer.embedding.word_embeddings.weight.data_ptr()


def test_full_size_config_on_meta_device_matches_index():
    cfg = ChatGLMConfig(**official_config_dict())
    with torch.device("meta"):
        model = ChatGLMForConditionalGeneration(cfg)
    index = official_index()
    sd = model.state_dict()
    assert set(sd) == set(index["weight_map"])  # including the rotary inv_freq buffer the release stores
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_layout(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffer = model.transformer.rotary_pos_emb.inv_freq.numel()
    assert (n_params + n_buffer) * 2 == index["metadata"]["total_size"]  # fp16 release, 2 bytes per element


# ---------------------------------------------------------------------------------------------------------------------
# (b) math against the reference
# ---------------------------------------------------------------------------------------------------------------------


def test_logits_equal_independent_reference():
    model = tiny_model()
    sd = model.state_dict()
    ids = [5, 17, 99, 3, 64, 64, 120, 7, 31]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ref = reference_logits(sd, model.config, ids)
    assert logits.shape == (len(ids), 128)
    assert ref.abs().max() > 1.0  # the weights are large enough for the comparison to mean something
    torch.testing.assert_close(logits.double(), ref, atol=1e-5, rtol=0)
    # negative control: the rotate-half pairing is a different model, and the reference can tell
    assert (reference_logits(sd, model.config, ids, rotary="half") - ref).abs().max() > 1e-2


def test_padded_batches_equal_unpadded_rows():
    model = tiny_model()
    sd = model.state_dict()
    rows = [[5, 17, 99, 3, 64, 120, 7, 31], [9, 8, 77, 1, 2], [100, 42]]
    L = max(map(len, rows))
    for side in ("left", "right"):
        ids = torch.zeros(len(rows), L, dtype=torch.long)
        mask = torch.zeros(len(rows), L, dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(L - len(r), L) if side == "left" else slice(0, len(r))
            ids[i, sl], mask[i, sl] = torch.tensor(r), 1
        with torch.no_grad():
            logits = model(ids, attention_mask=mask).logits
        assert logits.shape == (len(rows), L, 128) and torch.isfinite(logits).all()
        for i, r in enumerate(rows):
            row = logits[i][mask[i].bool()]
            torch.testing.assert_close(row.double(), reference_logits(sd, model.config, r), atol=1e-5, rtol=0)


def test_hidden_states_and_tuple_output():
    model = tiny_model()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        tup = model(ids, return_dict=False, use_cache=False)
    assert len(out.hidden_states) == model.config.num_layers + 1
    assert all(h.shape == (1, 4, 64) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[0], model.transformer.embedding.word_embeddings(ids))
    torch.testing.assert_close(tup[0], out.logits)


# ---------------------------------------------------------------------------------------------------------------------
# (c) cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_name", ["past_key_values", "cache"])  # transformers 5.2x's generate passes `cache`
def test_incremental_decoding_equals_full_forward(cache_name):
    model = tiny_model()
    ids = torch.tensor([[5, 17, 99, 3, 64, 120, 7, 31, 2, 11], [9, 8, 77, 1, 2, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :6], use_cache=True)
        steps = [out.logits]
        past = out.past_key_values
        for t in range(6, 10):
            out = model(ids[:, t : t + 1], **{cache_name: past}, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)

    # left-padded batch, growing attention mask, as generate drives it
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
        out = model(ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        steps, past = [out.logits], out.past_key_values
        for t in range(6, 10):
            out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], **{cache_name: past}, use_cache=True)
            steps.append(out.logits)
            past = out.past_key_values
    got = torch.cat(steps, dim=1)
    torch.testing.assert_close(got[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)


def test_greedy_generate_matches_uncached_argmax():
    model = tiny_model()
    prompt = torch.tensor([[5, 17, 99, 3], [9, 8, 77, 1]])
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
        seq = prompt
        for _ in range(4):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(generated, seq)


def test_left_padded_greedy_generate_matches_unpadded_rows():
    model = tiny_model()
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    prompt = torch.tensor([[5, 17, 99, 3], [0, 0, 77, 1]])
    with torch.no_grad():
        batched = model.generate(prompt, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        alone = model.generate(prompt[1:, 2:], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(batched[1, 2:], alone[0])


# ---------------------------------------------------------------------------------------------------------------------
# (d) save / load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_model()
    ids = torch.tensor([[5, 17, 99, 3, 64]])
    model.save_pretrained(tmp_path)
    loaded = ChatGLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.parametrize("with_inv_freq", [True, False])
def test_official_tensor_names_load_cleanly(tmp_path, with_inv_freq):
    from safetensors.torch import save_file

    model = tiny_model()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if with_inv_freq:
        sd["transformer.rotary_pos_emb.inv_freq"] = sd["transformer.rotary_pos_emb.inv_freq"].half()  # as released
    else:
        del sd["transformer.rotary_pos_emb.inv_freq"]
    assert set(sd) <= set(expected_layout(model.config))
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    cfg = official_config_dict()  # the release's config.json (auto_map, torch_dtype float16 ...) with tiny sizes
    cfg.update(TINY)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded, info = ChatGLMForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True, dtype=torch.float32
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = torch.tensor([[5, 17, 99, 3, 64]])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)
    inv_freq = loaded.transformer.rotary_pos_emb.inv_freq  # fp16-rounded when it came from the checkpoint
    torch.testing.assert_close(inv_freq, torch.tensor([1.0, 0.1, 0.01, 0.001]), rtol=1e-3, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# (e) training
# ---------------------------------------------------------------------------------------------------------------------


def test_random_init_is_small_and_a_tiny_model_learns():
    model = tiny_model(scale=False).train()
    w = model.transformer.encoder.layers[0].mlp.dense_h_to_4h.weight
    assert 0.015 < w.std().item() < 0.025
    assert torch.equal(model.transformer.encoder.final_layernorm.weight, torch.ones(64))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (2, 16), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = model(ids, labels=ids, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 4.0  # ~ log(128) at init
    assert losses[-1] < 0.2 * losses[0]
