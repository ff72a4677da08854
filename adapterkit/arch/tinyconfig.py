"""A tiny config.json of a model type transformers knows: a few layers, small widths, a small vocabulary.

Used to check a drafted plugin against a real model (`new-plugin` writes it as the declaration's tiny_config)
and to build throwaway checkpoints of many families. The config class's own defaults are shrunk key by key
under the names configs commonly use; whatever the class derives from them (per-layer lists, head sizes) is
left for it to derive again.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import AdapterkitError

DEPTH, WIDTH, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB, POSITIONS = 4, 64, 4, 2, 16, 128, 512, 128
MAX_PARAMETERS = 20_000_000
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# (size, keys, whether a smaller value in the defaults is kept)
SHRINK = [
    (DEPTH, DEPTH_KEYS, False),
    (WIDTH, ("hidden_size", "n_embd", "n_embed", "d_model", "word_embed_proj_dim"), False),
    (HEADS, ("num_attention_heads", "n_head", "num_heads", "n_heads"), False),
    (KV_HEADS, ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"), True),
    (HEAD_DIM, ("head_dim", "kv_channels", "attention_head_dim"), False),
    (FFN, ("intermediate_size", "ffn_dim", "ffn_hidden_size", "d_ff", "moe_intermediate_size",
           "shared_expert_intermediate_size", "n_inner"), False),
    (VOCAB, ("vocab_size", "padded_vocab_size"), False),
    (POSITIONS, ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"), False),
    (4, ("num_experts", "num_local_experts", "n_routed_experts"), True),
    (2, ("num_experts_per_tok", "moe_topk"), True),
    (8, ("rotary_dim",), False),
]
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")
DROPPED = ("architectures", "transformers_version", "_name_or_path", "auto_map", "dtype", "torch_dtype")


def tiny_config(model_type: str, base: Mapping[str, Any] | None = None) -> dict:
    """config.json content of a tiny model of ``model_type`` (``base``: a real config to shrink instead of the
    class defaults), checked by building the model on the meta device; AdapterkitError when it does not build."""
    from transformers import AutoConfig

    try:
        defaults = AutoConfig.for_model(model_type).to_dict() if base is None else dict(base)
    except (ValueError, KeyError) as exc:
        raise AdapterkitError(f"transformers does not know model_type {model_type!r} ({exc})") from None
    except Exception as exc:  # the config class rejects its own defaults
        raise AdapterkitError(f"the {model_type} config class rejects its defaults: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[-1][:200]}") from None
    original_depth = next((defaults[k] for k in DEPTH_KEYS if isinstance(defaults.get(k), int)), None)
    config = {}
    for key, value in defaults.items():
        if key in DROPPED or (isinstance(value, list) and original_depth and len(value) == original_depth):
            continue  # per-layer lists: the config class derives them again for the new depth
        config[key] = value
    for size, keys, keep_smaller in SHRINK:
        for key in keys:
            if isinstance(config.get(key), int) and not isinstance(config[key], bool):
                config[key] = min(size, config[key]) if keep_smaller else size
    if isinstance(config.get("attention_types"), list):  # [[kinds, repeats]] must cover the depth
        config["attention_types"] = [[["global", "local"], DEPTH // 2]]
    for key in TOKEN_IDS:
        if isinstance(config.get(key), int) and config[key] >= VOCAB:
            config[key] = 0
        elif isinstance(config.get(key), list):
            config[key] = [i for i in config[key] if i < VOCAB] or 0
    config["model_type"] = model_type
    architectures = check_builds(config)
    return {"model_type": model_type, "architectures": architectures,
            **{k: v for k, v in config.items() if k != "model_type"}}


def check_builds(config: Mapping[str, Any]) -> list[str]:
    """The causal-LM class names transformers builds for ``config`` (on the meta device), or AdapterkitError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    try:
        config_obj = AutoConfig.for_model(config["model_type"], **settings)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config_obj)
    except Exception as exc:  # transformers raises many kinds; each means "this config does not build"
        raise AdapterkitError(f"a tiny {config['model_type']} model does not build: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_PARAMETERS:
        raise AdapterkitError(f"a {config['model_type']} model from the shrunk config still has {size / 1e6:.0f}M parameters "
                              "(sizes this shrinking does not know, as in nested sub-configs)")
    return [type(model).__name__]


def write_checkpoint(config: Mapping[str, Any], directory, seed: int = 0):
    """A randomly initialised model of ``config`` saved to ``directory`` (safetensors and config.json)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **settings))
    model.save_pretrained(directory)
    return directory
