"""Native PyTorch / transformers implementation of ChatGLM2/ChatGLM3 (``model_type: chatglm``).

The published ``trust_remote_code`` modeling file of ChatGLM3 does not run on transformers 5, so this module
re-implements the architecture from its equations.  It is written to be numerically identical to the official
implementation and to keep the official checkpoint layout, so that the released weights (and the module paths an
editing method addresses, e.g. ``transformer.encoder.layers.{}.mlp.dense_4h_to_h``) are unchanged::

    transformer.embedding.word_embeddings                  nn.Embedding(padded_vocab_size, hidden_size)
    transformer.rotary_pos_emb.inv_freq                    buffer [kv_channels // 4] (kept for the checkpoint only)
    transformer.encoder.layers.N.input_layernorm           RMSNorm (or LayerNorm when rmsnorm=False)
    transformer.encoder.layers.N.self_attention.query_key_value   nn.Linear(hidden, heads*d + 2*groups*d, bias=qkv)
    transformer.encoder.layers.N.self_attention.dense      nn.Linear(heads*d, hidden, bias=add_bias_linear)
    transformer.encoder.layers.N.post_attention_layernorm  RMSNorm
    transformer.encoder.layers.N.mlp.dense_h_to_4h         nn.Linear(hidden, 2*ffn_hidden_size)   (fused SwiGLU)
    transformer.encoder.layers.N.mlp.dense_4h_to_h         nn.Linear(ffn_hidden_size, hidden)
    transformer.encoder.final_layernorm                    RMSNorm (when post_layer_norm)
    transformer.output_layer                               nn.Linear(hidden, padded_vocab_size, bias=False)

Differences in *layout* (not in math) from the official code: tensors are batch-first everywhere (the official code
works sequence-first internally), so forward hooks on any sub-module see ``[batch, seq, ...]``; the key/value cache is
a transformers ``Cache`` (``DynamicCache``) holding ``[batch, groups, seq, kv_channels]`` tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

try:  # transformers >= 4.45
    from transformers.generation import GenerationMixin
except ImportError:  # pragma: no cover - very old transformers
    from transformers.generation.utils import GenerationMixin

try:
    from transformers.cache_utils import Cache, DynamicCache
except ImportError:  # pragma: no cover
    Cache = DynamicCache = None

try:  # transformers >= 4.48: checkpointing handled by the layer class
    from transformers.modeling_layers import GradientCheckpointingLayer as _LayerBase
except ImportError:  # pragma: no cover
    _LayerBase = nn.Module

try:  # transformers 5: init functions that respect the "already loaded" flags of from_pretrained
    from transformers import initialization as _init
except ImportError:  # pragma: no cover
    _init = None

__all__ = [
    "ChatGLMConfig",
    "ChatGLMPreTrainedModel",
    "ChatGLMModel",
    "ChatGLMForConditionalGeneration",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rotary_pos_emb",
    "SelfAttention",
    "MLP",
    "GLMBlock",
    "GLMTransformer",
    "Embedding",
]


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


class ChatGLMConfig(PretrainedConfig):
    """Configuration of ChatGLM2/3. Field names and defaults follow the official ``configuration_chatglm.py``.

    Standard aliases used by generic code are mapped onto the official names (``num_hidden_layers`` ->
    ``num_layers``, ``vocab_size`` -> ``padded_vocab_size``, ``intermediate_size`` -> ``ffn_hidden_size``,
    ``head_dim`` -> ``kv_channels``, ``max_position_embeddings`` -> ``seq_length``, ``rms_norm_eps`` ->
    ``layernorm_epsilon``); ``num_key_value_heads`` is derived from the multi-query settings.
    """

    model_type = "chatglm"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "num_hidden_layers": "num_layers",
        "vocab_size": "padded_vocab_size",
        "intermediate_size": "ffn_hidden_size",
        "head_dim": "kv_channels",
        "max_position_embeddings": "seq_length",
        "rms_norm_eps": "layernorm_epsilon",
        "layer_norm_epsilon": "layernorm_epsilon",
    }

    def __init__(
        self,
        num_layers: int = 28,
        padded_vocab_size: int = 65024,
        hidden_size: int = 4096,
        ffn_hidden_size: int = 13696,
        kv_channels: int = 128,
        num_attention_heads: int = 32,
        seq_length: int = 2048,
        hidden_dropout: float = 0.0,
        classifier_dropout: float | None = None,
        attention_dropout: float = 0.0,
        layernorm_epsilon: float = 1e-5,
        rope_ratio: float = 1,
        rmsnorm: bool = True,
        apply_residual_connection_post_layernorm: bool = False,
        post_layer_norm: bool = True,
        add_bias_linear: bool = False,
        add_qkv_bias: bool = False,
        bias_dropout_fusion: bool = True,
        multi_query_attention: bool = False,
        multi_query_group_num: int = 1,
        apply_query_key_layer_scaling: bool = True,
        attention_softmax_in_fp32: bool = True,
        fp32_residual_connection: bool = False,
        original_rope: bool = True,
        quantization_bit: int = 0,
        pre_seq_len: int | None = None,
        prefix_projection: bool = False,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ):
        # accept the standard names too (e.g. a config written by generic tooling)
        aliases = {
            "num_hidden_layers": "num_layers",
            "vocab_size": "padded_vocab_size",
            "intermediate_size": "ffn_hidden_size",
            "head_dim": "kv_channels",
            "max_position_embeddings": "seq_length",
        }
        given = {official: kwargs.pop(alias) for alias, official in aliases.items() if kwargs.get(alias) is not None}
        for alias in aliases:
            kwargs.pop(alias, None)
        num_layers = given.get("num_layers", num_layers)
        padded_vocab_size = given.get("padded_vocab_size", padded_vocab_size)
        ffn_hidden_size = given.get("ffn_hidden_size", ffn_hidden_size)
        kv_channels = given.get("kv_channels", kv_channels)
        seq_length = given.get("seq_length", seq_length)
        kwargs.pop("num_key_value_heads", None)

        self.num_layers = num_layers
        self.padded_vocab_size = padded_vocab_size
        self.hidden_size = hidden_size
        self.ffn_hidden_size = ffn_hidden_size
        self.kv_channels = kv_channels
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.hidden_dropout = hidden_dropout
        self.classifier_dropout = classifier_dropout
        self.attention_dropout = attention_dropout
        self.layernorm_epsilon = layernorm_epsilon
        self.rope_ratio = rope_ratio
        self.rmsnorm = rmsnorm
        self.apply_residual_connection_post_layernorm = apply_residual_connection_post_layernorm
        self.post_layer_norm = post_layer_norm
        self.add_bias_linear = add_bias_linear
        self.add_qkv_bias = add_qkv_bias
        self.bias_dropout_fusion = bias_dropout_fusion
        self.multi_query_attention = multi_query_attention
        self.multi_query_group_num = multi_query_group_num
        self.apply_query_key_layer_scaling = apply_query_key_layer_scaling
        self.attention_softmax_in_fp32 = attention_softmax_in_fp32
        self.fp32_residual_connection = fp32_residual_connection
        self.original_rope = original_rope
        self.quantization_bit = quantization_bit
        self.pre_seq_len = pre_seq_len
        self.prefix_projection = prefix_projection
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def num_key_value_heads(self) -> int:
        """Number of distinct key/value heads (the multi-query groups, or every head without MQA)."""
        return self.multi_query_group_num if self.multi_query_attention else self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that are rotated: the first half of ``kv_channels``."""
        return self.kv_channels // 2


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed like the official one (statistics in float32, result in the input dtype)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return (self.weight * hidden_states).to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def _make_norm(config: ChatGLMConfig) -> nn.Module:
    if config.rmsnorm:
        return RMSNorm(config.hidden_size, eps=config.layernorm_epsilon)
    return nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)


class RotaryEmbedding(nn.Module):
    """Rotary table for the first ``rotary_dim = kv_channels // 2`` channels of each head.

    ``inv_freq`` is registered (persistent) only so that the official checkpoint, which stores it, loads without
    unexpected keys; like the official code, the angles are always recomputed in float32 from the config
    (``base = 10000 * rope_ratio``), so the stored buffer never changes the result.
    """

    def __init__(self, dim: int, rope_ratio: float = 1, device=None):
        super().__init__()
        self.dim = dim  # number of rotated channels per head
        self.rope_ratio = rope_ratio
        self.register_buffer("inv_freq", self._official_inv_freq(dim, device=device), persistent=True)

    @staticmethod
    def _official_inv_freq(dim: int, device=None) -> torch.Tensor:
        # value the official code stores in the checkpoint (base 10000, independent of rope_ratio)
        return 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))

    def theta(self, device) -> torch.Tensor:
        base = 10000 * self.rope_ratio
        return 1.0 / (base ** (torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``position_ids`` [batch, seq] -> (cos, sin), each [batch, seq, dim // 2] in float32."""
        angles = position_ids.to(torch.float32)[..., None] * self.theta(position_ids.device)
        return torch.cos(angles), torch.sin(angles)


def apply_rotary_pos_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (2i, 2i+1) of the first ``2 * cos.shape[-1]`` channels of each head.

    x: [batch, heads, seq, head_dim]; cos, sin: [batch, seq, rot_dim // 2]. Channels past ``rot_dim`` pass through.
    Like the official code, the table is cast to the activations' dtype before the products.
    """
    rot_dim = cos.shape[-1] * 2
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    x_pairs = x_rot.reshape(*x_rot.shape[:-1], rot_dim // 2, 2)
    cos = cos[:, None].to(x.dtype)
    sin = sin[:, None].to(x.dtype)
    x0, x1 = x_pairs[..., 0], x_pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, x_pass), dim=-1)


class SelfAttention(nn.Module):
    """Grouped multi-query attention with a fused ``query_key_value`` projection and an output ``dense``."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.kv_channels
        self.projection_size = config.kv_channels * config.num_attention_heads
        self.multi_query_attention = config.multi_query_attention
        self.num_groups = config.multi_query_group_num if self.multi_query_attention else self.num_heads
        if self.num_heads % self.num_groups:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of multi_query_group_num ({self.num_groups})"
            )
        if self.multi_query_attention:
            self.qkv_hidden_size = self.projection_size + 2 * self.head_dim * self.num_groups
        else:
            self.qkv_hidden_size = 3 * self.projection_size
        self.query_key_value = nn.Linear(
            config.hidden_size, self.qkv_hidden_size, bias=config.add_bias_linear or config.add_qkv_bias
        )
        self.dense = nn.Linear(self.projection_size, config.hidden_size, bias=config.add_bias_linear)
        self.attention_dropout = config.attention_dropout

    def _split_qkv(self, mixed: torch.Tensor):
        bsz, seq = mixed.shape[:2]
        if self.multi_query_attention:
            q, k, v = mixed.split(
                [self.projection_size, self.num_groups * self.head_dim, self.num_groups * self.head_dim], dim=-1
            )
            q = q.view(bsz, seq, self.num_heads, self.head_dim)
            k = k.view(bsz, seq, self.num_groups, self.head_dim)
            v = v.view(bsz, seq, self.num_groups, self.head_dim)
        else:
            # official layout without MQA: per head [q | k | v] blocks of head_dim channels
            mixed = mixed.view(bsz, seq, self.num_heads, 3 * self.head_dim)
            q, k, v = mixed.split(self.head_dim, dim=-1)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, heads, s, d]

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary_pos_emb: tuple[torch.Tensor, torch.Tensor],
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        bsz, q_len = hidden_states.shape[:2]
        query, key, value = self._split_qkv(self.query_key_value(hidden_states))
        cos, sin = rotary_pos_emb
        query = apply_rotary_pos_emb(query, cos, sin)
        key = apply_rotary_pos_emb(key, cos, sin)

        if past_key_values is not None and use_cache:
            key, value = past_key_values.update(key, value, self.layer_idx)

        if self.num_groups != self.num_heads:  # head h reads group h // (heads / groups)
            repeat = self.num_heads // self.num_groups
            key = key.repeat_interleave(repeat, dim=1)
            value = value.repeat_interleave(repeat, dim=1)

        dropout_p = self.attention_dropout if self.training else 0.0
        if attention_mask is None:
            # no padding: causal when the query block covers the whole key range, otherwise (single-token decode
            # step) every cached key is visible
            context = F.scaled_dot_product_attention(
                query, key, value, is_causal=query.shape[2] == key.shape[2] and q_len > 1, dropout_p=dropout_p
            )
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(bsz, q_len, self.projection_size)
        return self.dense(context)


class MLP(nn.Module):
    """Fused SwiGLU: ``dense_h_to_4h`` -> halves (x1, x2) -> silu(x1) * x2 -> ``dense_4h_to_h``."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.ffn_hidden_size * 2, bias=config.add_bias_linear)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.add_bias_linear)

    @staticmethod
    def activation_func(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return F.silu(x1) * x2

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(self.activation_func(self.dense_h_to_4h(hidden_states)))


class GLMBlock(_LayerBase):
    """One transformer layer: pre-norm attention and SwiGLU MLP with residuals (official ``GLMBlock``)."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.layer_number = layer_idx + 1  # the official 1-based numbering
        self.apply_residual_connection_post_layernorm = config.apply_residual_connection_post_layernorm
        self.fp32_residual_connection = config.fp32_residual_connection
        self.hidden_dropout = config.hidden_dropout
        self.input_layernorm = _make_norm(config)
        self.self_attention = SelfAttention(config, layer_idx)
        self.post_attention_layernorm = _make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_pos_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        layernorm_output = self.input_layernorm(hidden_states)
        attention_output = self.self_attention(
            layernorm_output, attention_mask, rotary_pos_emb, past_key_values=past_key_values, use_cache=use_cache
        )
        residual = layernorm_output if self.apply_residual_connection_post_layernorm else hidden_states
        layernorm_input = residual + F.dropout(attention_output, p=self.hidden_dropout, training=self.training)

        layernorm_output = self.post_attention_layernorm(layernorm_input)
        mlp_output = self.mlp(layernorm_output)
        residual = layernorm_output if self.apply_residual_connection_post_layernorm else layernorm_input
        return residual + F.dropout(mlp_output, p=self.hidden_dropout, training=self.training)


class GLMTransformer(nn.Module):
    """The stack of ``layers`` and the ``final_layernorm`` (official ``encoder``)."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.num_layers = config.num_layers
        self.post_layer_norm = config.post_layer_norm
        self.layers = nn.ModuleList([GLMBlock(config, i) for i in range(config.num_layers)])
        if self.post_layer_norm:
            self.final_layernorm = _make_norm(config)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary_pos_emb: tuple[torch.Tensor, torch.Tensor],
        past_key_values: Any = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
    ):
        all_hidden_states = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_mask,
                rotary_pos_emb=rotary_pos_emb,
                past_key_values=past_key_values,
                use_cache=use_cache,
            )
        if output_hidden_states:  # like the official code: the last entry is the last layer's output, before the norm
            all_hidden_states += (hidden_states,)
        if self.post_layer_norm:
            hidden_states = self.final_layernorm(hidden_states)
        return hidden_states, all_hidden_states


class Embedding(nn.Module):
    """Word embeddings (official ``embedding`` module, holding ``word_embeddings``)."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.fp32_residual_connection = config.fp32_residual_connection

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids)
        if self.fp32_residual_connection:
            embeddings = embeddings.float()
        return embeddings


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class ChatGLMPreTrainedModel(PreTrainedModel):
    config_class = ChatGLMConfig
    config: ChatGLMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    is_parallelizable = False
    _no_split_modules = ["GLMBlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _keys_to_ignore_on_load_missing = [r"rotary_pos_emb\.inv_freq"]
    _supports_sdpa = True
    _supports_cache_class = True

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02) or 0.02
        normal_ = _init.normal_ if _init is not None else nn.init.normal_
        zeros_ = _init.zeros_ if _init is not None else nn.init.zeros_
        ones_ = _init.ones_ if _init is not None else nn.init.ones_
        if isinstance(module, nn.Linear):
            normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            if module.weight is not None:
                ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                zeros_(module.bias)
        elif isinstance(module, RotaryEmbedding):
            value = RotaryEmbedding._official_inv_freq(module.dim, device=module.inv_freq.device)
            if _init is not None:
                _init.copy_(module.inv_freq, value.to(module.inv_freq.dtype))
            else:
                with torch.no_grad():
                    module.inv_freq.copy_(value)


def _cache_argument(past_key_values: Any, kwargs: dict) -> Any:
    """The cache, whichever name the caller used: transformers 5.2x's ``generate`` passes it as ``cache``."""
    cache = kwargs.pop("cache", None)
    if past_key_values is not None and cache is not None and cache is not past_key_values:
        raise ValueError("pass the key/value cache once, as `cache` or as `past_key_values`")
    return past_key_values if past_key_values is not None else cache


def _to_cache(past_key_values: Any):
    """Accept a ``Cache`` or a legacy tuple of per-layer (key, value) in ``[batch, groups, seq, dim]`` layout."""
    if past_key_values is None or (Cache is not None and isinstance(past_key_values, Cache)):
        return past_key_values
    if DynamicCache is None:  # pragma: no cover
        raise TypeError("tuple past_key_values need transformers.cache_utils.DynamicCache")
    legacy = tuple(tuple(layer) for layer in past_key_values)
    if hasattr(DynamicCache, "from_legacy_cache"):
        return DynamicCache.from_legacy_cache(legacy)
    return DynamicCache(legacy)


def _new_cache(config: ChatGLMConfig):
    try:
        return DynamicCache(config=config)
    except TypeError:  # pragma: no cover - transformers without the config argument
        return DynamicCache()


class ChatGLMModel(ChatGLMPreTrainedModel):
    """Embedding, rotary table, encoder and ``output_layer`` (the official ``transformer`` module).

    ``forward`` returns the final (normed) hidden states; the output layer is applied by
    :class:`ChatGLMForConditionalGeneration`, as in the official code.
    """

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        if config.pre_seq_len is not None:
            raise NotImplementedError("P-tuning prefixes (pre_seq_len) are not supported by the native ChatGLM")
        if config.quantization_bit:
            raise NotImplementedError("quantized ChatGLM checkpoints (quantization_bit) are not supported")
        self.embedding = Embedding(config)
        self.num_layers = config.num_layers
        self.multi_query_group_num = config.multi_query_group_num
        self.kv_channels = config.kv_channels
        self.seq_length = config.seq_length
        head_dim = config.hidden_size // config.num_attention_heads if config.kv_channels is None else config.kv_channels
        self.rotary_pos_emb = RotaryEmbedding(head_dim // 2, rope_ratio=config.rope_ratio)
        self.encoder = GLMTransformer(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embedding.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_layer

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.output_layer = value

    @staticmethod
    def _build_attention_mask(
        attention_mask: torch.Tensor | None, batch: int, q_len: int, past_len: int, device
    ) -> torch.Tensor | None:
        """Boolean mask [batch, 1, q_len, past_len + q_len], True where a query may attend.

        Returns None when plain causal attention is exact (no padding). The rules are the official ``get_masks``:
        causal, keys with padding 0 hidden; without a cache, a padded query row sees every key (its output is
        never used, this only avoids an all-masked row).
        """
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask  # already [batch, 1, q, k]: boolean (True = attend) or additive float, used as is
        k_len = past_len + q_len
        if attention_mask is None or bool(attention_mask.all()):
            if past_len == 0 or q_len == 1:
                return None
            attention_mask = None
        causal = torch.arange(k_len, device=device)[None, :] <= (torch.arange(q_len, device=device)[:, None] + past_len)
        allowed = causal[None].expand(batch, q_len, k_len)
        if attention_mask is not None:
            pad = attention_mask.to(device=device).bool()
            allowed = allowed & pad[:, None, :]
            if past_len == 0:
                allowed = allowed | ~pad[:, :, None]
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # never leave a row without any key
        return allowed[:, None]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        full_attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ):
        if output_attentions:
            raise NotImplementedError("output_attentions is not supported by the native ChatGLM (SDPA attention)")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else bool(self.config.output_hidden_states)
        )
        past_key_values = _cache_argument(past_key_values, kwargs)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        if self.gradient_checkpointing_enabled and self.training and use_cache:
            use_cache = False

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embedding(input_ids)
        batch, q_len = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        if use_cache:
            past_key_values = _to_cache(past_key_values)
            if past_key_values is None:
                past_key_values = _new_cache(self.config)
        else:
            past_key_values = None
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0

        if attention_mask is not None and attention_mask.dim() == 2:
            if attention_mask.shape[1] == q_len and past_len:  # mask of the new tokens only: the past is visible
                attention_mask = torch.cat([attention_mask.new_ones(batch, past_len), attention_mask], dim=1)
            elif attention_mask.shape[1] != past_len + q_len:
                raise ValueError(
                    f"attention_mask has {attention_mask.shape[1]} columns, expected past + new = {past_len + q_len}"
                )

        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:].to(device)
            else:
                position_ids = torch.arange(past_len, past_len + q_len, device=device)[None].expand(batch, q_len)
        elif position_ids.dim() == 1:
            position_ids = position_ids[None].expand(batch, -1)

        if full_attention_mask is not None:  # official name: boolean mask, True = masked out
            mask = ~full_attention_mask.bool() if full_attention_mask.dtype == torch.bool else full_attention_mask
        else:
            mask = self._build_attention_mask(attention_mask, batch, q_len, past_len, device)

        rotary_pos_emb = self.rotary_pos_emb(position_ids)
        hidden_states, all_hidden_states = self.encoder(
            inputs_embeds,
            mask,
            rotary_pos_emb,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        if not return_dict:
            return tuple(v for v in (hidden_states, past_key_values, all_hidden_states) if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, past_key_values=past_key_values, hidden_states=all_hidden_states
        )

    @property
    def gradient_checkpointing_enabled(self) -> bool:
        return any(getattr(layer, "gradient_checkpointing", False) for layer in self.encoder.layers)


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    """ChatGLM causal LM: ``transformer`` (:class:`ChatGLMModel`) whose ``output_layer`` gives the logits."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.max_sequence_length = config.seq_length
        self.transformer = ChatGLMModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.embedding.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.embedding.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.transformer.output_layer

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.transformer.output_layer = value

    def get_decoder(self) -> ChatGLMModel:
        return self.transformer

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_last_logit: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ):
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        past_key_values = _cache_argument(past_key_values, kwargs)
        outputs = self.transformer(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if return_last_logit:
            logits_to_keep = 1
        if isinstance(logits_to_keep, int):
            if logits_to_keep > 0:
                hidden_states = hidden_states[:, -logits_to_keep:]
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.transformer.output_layer(hidden_states)

        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:].to(logits.device)
            loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100
            )

        if not return_dict:
            out = (logits,) + tuple(v for v in (outputs.past_key_values, outputs.hidden_states) if v is not None)
            return ((loss,) + out) if loss is not None else out
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states
        )

    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):  # pragma: no cover - used by old transformers only
        if hasattr(past_key_values, "reorder_cache"):
            past_key_values.reorder_cache(beam_idx)
            return past_key_values
        return tuple(tuple(t.index_select(0, beam_idx.to(t.device)) for t in layer) for layer in past_key_values)
