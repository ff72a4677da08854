"""An architecture declaration inferred from the model itself, for model types no plugin declares.

The model is built from config.json on the meta device (no weights; only classes transformers ships, never
code from the checkpoint) and run once on a few meta tokens with hooks, so roles are found by what the
modules are and do, not by their names: the block list is the ModuleList with one entry per layer; the MLP
output projection is the MLP's last projection to the hidden size; the gate is the projection whose output
feeds the activation; the head is ``get_output_embeddings()``, tied when it shares the embedding's weight.
Each role keeps how it was found and how sure that is. Where a role is ambiguous, or the MLP is a mixture of
experts, inference refuses and says why, rather than guess a module that edits would then rewrite.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InferenceRefused

PLUGIN_ROUTE = ("write a plugin that declares it (CONTRIBUTING.md explains each field; the plugin in examples/ "
                "is one to copy); where inference succeeds, `adapterkit new-plugin CHECKPOINT --name adapterkit-NAME "
                "-o DIR` writes the distribution for you")
HIGH, MEDIUM = "high", "medium"
ROLE_ORDER = ("layers", "attn", "attn_out", "mlp", "mlp_gate", "mlp_in", "mlp_out", "ln_f", "norm", "embed", "lm_head",
              "weight_layout", "num_layers", "hidden_size", "intermediate_size", "vocab_size", "max_positions")
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HIDDEN_KEYS = ("hidden_size", "n_embd", "n_embed", "d_model", "model_dim", "dim")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len", "n_ctx")
INTERMEDIATE_KEYS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "d_ff", "ffn_inner_dim", "inner_size")
# depth-relative defaults for an inferred declaration: the rule built-in declarations use where nothing is
# published for a family (ROME layer 5, MEMIT layers 4-8 of a 32-layer reference; PMET takes MEMIT's)
INFERRED_DEFAULTS = {
    "rome": {"layers": {"at": 5, "of": 32}},
    "memit": {"layers": {"from": 4, "to": 8, "of": 32}},
    "mend": {"inner_params": {"layers": {"last": 3}, "roles": ["mlp_in", "mlp_out"]}},
}


@dataclass
class Finding:
    role: str
    path: str
    confidence: str
    how: str


@dataclass
class Inference:
    """An inferred declaration, with how each role was found."""
    declaration: dict
    findings: list[Finding] = field(default_factory=list)

    @property
    def confidence(self) -> str:
        return MEDIUM if any(f.confidence == MEDIUM for f in self.findings) else HIGH

    @property
    def ordered_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: ROLE_ORDER.index(f.role) if f.role in ROLE_ORDER else len(ROLE_ORDER))

    def table(self) -> str:
        rows = [(f.role, f.path, f.confidence, f.how) for f in self.ordered_findings]
        widths = [max(len(r[i]) for r in rows + [("role", "module", "confidence", "")]) for i in range(3)]
        lines = [f"{'role':<{widths[0]}}  {'module':<{widths[1]}}  {'confidence':<{widths[2]}}  how it was found"]
        lines += [f"{r:<{widths[0]}}  {p:<{widths[1]}}  {c:<{widths[2]}}  {h}" for r, p, c, h in rows]
        return "\n".join(lines)


def refuse(model_type, why: str) -> InferenceRefused:
    return InferenceRefused(f"no plugin declares model_type={model_type!r}, and its declaration cannot be inferred: {why}",
                            fix=PLUGIN_ROUTE)


# --- entry point ----------------------------------------------------------------------------------
def infer(config: Mapping[str, Any]) -> Inference:
    """The declaration of the model config.json describes, or InferenceRefused saying why not."""
    model_type = config.get("model_type")
    model = _meta_model(config, model_type)
    return _Inferrer(model, config, model_type).run()


def _meta_model(config: Mapping[str, Any], model_type):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not model_type or model_type not in CONFIG_MAPPING:
        raise refuse(model_type, "transformers does not know this model type, and code shipped with a checkpoint is "
                                 "never run (trust_remote_code stays off)")
    settings = {k: v for k, v in config.items() if k not in ("model_type", "auto_map", "_name_or_path", "transformers_version")}
    try:
        config_obj = AutoConfig.for_model(model_type, **settings)
    except Exception as exc:  # transformers validates configs its own way; any failure means no model
        raise refuse(model_type, f"transformers rejects its config.json ({type(exc).__name__}: {exc})") from None
    if getattr(config_obj, "is_encoder_decoder", False):
        raise refuse(model_type, "it is an encoder-decoder; the editing methods here work on decoder-only models")
    if any(hasattr(config_obj, key) for key in ("vision_config", "audio_config")) or hasattr(config_obj, "text_config"):
        raise refuse(model_type, "it is a multimodal model whose language model is nested in a wrapper "
                                 "(config.json keeps its depth under text_config)")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config_obj)
    except ValueError as exc:
        raise refuse(model_type, f"transformers has no causal-LM class for it ({exc})") from None
    except Exception as exc:
        raise refuse(model_type, f"building it from config.json failed ({type(exc).__name__}: {exc})") from None
    return model.eval()


# --- the inference --------------------------------------------------------------------------------
class _Inferrer:
    def __init__(self, model, config: Mapping[str, Any], model_type):
        self.model, self.config, self.model_type = model, config, model_type
        self.modules = dict(model.named_modules())
        self.names = {id(m): n for n, m in self.modules.items()}
        self.findings: list[Finding] = []

    def found(self, role: str, path: str, confidence: str, how: str) -> str:
        self.findings.append(Finding(role, path, confidence, how))
        return path

    def refuse(self, why: str) -> InferenceRefused:
        return refuse(self.model_type, why)

    def run(self) -> Inference:
        layers_path, blocks = self.blocks()
        self.layers_path = layers_path
        block0 = f"{layers_path}.0"
        trace = _ForwardTrace(self.model, block0)
        attn_module = self.attention(block0)
        mlp_path, mlp_in, mlp_gate, mlp_out, fused = self.mlp(block0, attn_module, trace)
        attn_out = self.attention_output(block0, attn_module, trace)
        attn = self.value_point("attn", attn_module, attn_out, trace, "the block's one attention child")
        layout = self.layout([attn_out, mlp_out])
        embed, lm_head, tied = self.head()
        ln_f, norm = self.final_norm(layers_path, trace)
        hidden = _dims(self.modules[mlp_out])[1]
        inter = _dims(self.modules[mlp_out])[0]
        layer = {"attn": _rel(attn, block0), "attn_out": _rel(attn_out, block0), "mlp": _rel(mlp_path, block0),
                 "mlp_in": _rel(mlp_in, block0), "mlp_out": _rel(mlp_out, block0)}
        if mlp_gate:
            layer["mlp_gate"] = _rel(mlp_gate, block0)
        self.same_in_every_block(layers_path, len(blocks), layer)
        declaration = {
            "name": _identifier(self.model_type),
            "description": f"inferred by adapterkit from {type(self.model).__name__} (transformers' own classes)",
            "match": {"model_types": [self.model_type], "architectures": [type(self.model).__name__]},
            "config": self.config_keys(len(blocks), hidden, inter),
            "modules": {"embed": embed, "layers": layers_path, "layer": layer, "ln_f": ln_f, "lm_head": lm_head},
            "weight_layout": layout,
            "norm": norm,
            "tied_lm_head": tied,
            "v_loss_layer": -1,
            "defaults": _defaults(bool(mlp_gate)),
        }
        if fused > 1:
            declaration["mlp_in_fused"] = fused
        return Inference(declaration, self.findings)

    # -- blocks ------------------------------------------------------------------------------------
    def blocks(self):
        import torch.nn as nn

        depth = getattr(self.model.config, "num_hidden_layers", None)
        lists = [(n, m) for n, m in self.modules.items() if isinstance(m, nn.ModuleList) and len(m) > 0
                 and (depth is None or len(m) == depth) and _has_projection(m[0])]
        if not lists:
            raise self.refuse(f"no ModuleList of {depth} blocks holding linear layers (the repeated decoder blocks)")
        outer = [(n, m) for n, m in lists if not any(n != o and n.startswith(o + ".") for o, _ in lists)]
        if len(outer) > 1:
            raise self.refuse(f"several ModuleLists could be the decoder blocks: {', '.join(n for n, _ in outer)}")
        name, blocks = outer[0]
        kinds = {type(b).__name__ for b in blocks}
        if len(kinds) > 1:
            raise self.refuse(f"{name} holds blocks of different kinds ({', '.join(sorted(kinds))}): "
                              "one template per role cannot address them all")
        self.found("layers", name, HIGH, f"the one ModuleList of {len(blocks)} {type(blocks[0]).__name__} blocks "
                                          f"(config: {len(blocks)} layers)")
        return name, blocks

    def same_in_every_block(self, layers_path: str, depth: int, layer: Mapping[str, str]) -> None:
        for index in range(1, depth):
            missing = [rel for rel in layer.values() if f"{layers_path}.{index}.{rel}" not in self.modules]
            if missing:
                raise self.refuse(f"block {index} has no {', '.join(sorted(set(missing)))} (block 0 has): its blocks hold "
                                  "different modules, as hybrid models do, and one template per role cannot address them")

    # -- attention ---------------------------------------------------------------------------------
    def attention(self, block0: str) -> str:
        children = _children(self.modules[block0], block0)
        candidates = [n for n, m in children if re.search(r"attn|attention", type(m).__name__ + " " + n.rsplit(".", 1)[-1], re.I)
                      and _has_projection(m)]
        if len(candidates) != 1:
            why = "none" if not candidates else ", ".join(candidates)
            raise self.refuse(f"cannot tell the attention module of {block0} (candidates: {why})")
        return candidates[0]

    def value_point(self, role: str, container: str | None, projection: str, trace, how: str) -> str:
        """The container, where its output is its output projection's (what ROME's value and causal traces read);
        else the projection itself, whose output is exactly what the block adds."""
        if container and trace.returns(container, projection):
            return self.found(role, container, HIGH, f"{how} ({type(self.modules[container]).__name__}); its output is "
                                                     f"{projection.rsplit('.', 1)[-1]}'s (traced)")
        reason = ("its output is not the projection's (it adds more, such as the residual)" if container and trace.ok
                  else "its output could not be traced" if container else "the block has no such module")
        return self.found(role, projection, HIGH if trace.ok or not container else MEDIUM,
                          f"the output projection itself: {reason}")

    def attention_output(self, block0: str, attn: str, trace) -> str:
        hidden = self.hidden_size()
        projections = [n for n in trace.order_within(attn) if _dims(self.modules[n]) and _dims(self.modules[n])[1] == hidden]
        ran = bool(projections)
        if not ran:
            projections = [n for n, m in self.modules.items() if n.startswith(attn + ".") and _dims(m) and _dims(m)[1] == hidden]
        if not projections:
            raise self.refuse(f"no projection to the hidden size ({hidden}) inside {attn}")
        returned = [n for n in projections if trace.returns(attn, n)]
        if returned:
            return self.found("attn_out", returned[0], HIGH, "the attention returns its output (traced)")
        how = f"{'ran' if ran else 'registered'} last among the attention's projections to the hidden size"
        return self.found("attn_out", projections[-1], HIGH if len(projections) == 1 else MEDIUM,
                          how + (" (the only one)" if len(projections) == 1 else ""))

    # -- MLP ---------------------------------------------------------------------------------------
    def mlp(self, block0: str, attn: str, trace):
        self.refuse_experts(block0, attn)
        hidden = self.hidden_size()
        children = _children(self.modules[block0], block0)
        containers = [n for n, m in children if n != attn and _has_projection(m)
                      and re.search(r"mlp|feed_?forward|ffn", type(m).__name__ + " " + n.rsplit(".", 1)[-1], re.I)]
        if len(containers) > 1:
            raise self.refuse(f"several modules of {block0} could be its MLP: {', '.join(containers)}")
        if containers:
            scope, scope_how = containers[0], f"the block's one MLP child ({type(self.modules[containers[0]]).__name__})"
            inside = lambda n: n.startswith(scope + ".")  # noqa: E731
        else:  # the projections sit in the block itself, beside the attention
            scope, scope_how = block0, "no MLP module: the block's own projections outside the attention"
            inside = lambda n: n.startswith(block0 + ".") and not n.startswith(attn + ".") and n.count(".") == block0.count(".") + 1  # noqa: E731
        ran = [n for n in trace.order if inside(n) and _dims(self.modules[n])]
        projections = ran or [n for n, m in self.modules.items() if inside(n) and _dims(m)]
        outs = [n for n in projections if _dims(self.modules[n])[1] == hidden]
        returned = [n for n in outs if containers and trace.returns(scope, n)]
        if returned:
            mlp_out, how = returned[0], "the MLP returns its output (traced)"
        elif len(outs) == 1:
            mlp_out, how = outs[0], f"the MLP's one projection back to the hidden size ({hidden})"
        else:
            raise self.refuse(f"{scope} has {len(outs) or 'no'} projections back to the hidden size ({hidden})"
                              + (f" ({', '.join(outs)}), and its output is none of theirs" if outs else ""))
        inter = _dims(self.modules[mlp_out])[0]
        self.found("mlp_out", mlp_out, HIGH, how)
        ins = [n for n in projections if n != mlp_out and _dims(self.modules[n])[0] == hidden]
        mlp_in, gate, fused = self.mlp_inputs(ins, inter, trace, scope)
        mlp = self.value_point("mlp", containers[0] if containers else None, mlp_out, trace, scope_how.split(" (")[0])
        return mlp, mlp_in, gate, mlp_out, fused

    def mlp_inputs(self, ins, inter: int, trace, scope: str):
        widths = {n: _dims(self.modules[n])[1] for n in ins}
        if len(ins) == 1 and widths[ins[0]] in (inter, 2 * inter):
            fused = widths[ins[0]] // inter
            how = "the MLP's one projection from the hidden size" + (" (gate and up in one weight: twice the width)" if fused > 1 else "")
            return self.found("mlp_in", ins[0], HIGH, how), None, fused
        if len(ins) == 2 and all(w == inter for w in widths.values()):
            activated = trace.feeds_activation(scope)
            gates = [n for n in ins if activated is not None and trace.output_of(n) is activated]
            how = "its output is the activation's input (traced)"
            if len(gates) != 1:
                gates = [n for n in ins if re.search(r"gate|w1$|wi_0", n.rsplit(".", 1)[-1])]
                how = "named as the gate (the forward pass did not show which projection the activation reads)"
            if len(gates) != 1:
                raise self.refuse(f"the MLP has two input projections ({', '.join(ins)}) and which one is the gate "
                                  "cannot be told")
            gate = gates[0]
            up = next(n for n in ins if n != gate)
            self.found("mlp_gate", gate, HIGH if how.endswith("(traced)") else MEDIUM, how)
            return self.found("mlp_in", up, HIGH if how.endswith("(traced)") else MEDIUM, "the other input projection (up)"), gate, 1
        raise self.refuse(f"the MLP's input projections ({', '.join(ins) or 'none'}) do not match its output "
                          f"projection's width ({inter})")

    def refuse_experts(self, block0: str, attn: str) -> None:
        """A mixture of experts in any block (some keep dense MLPs in their first blocks)."""
        import torch.nn as nn

        attn_rel = _rel(attn, block0)
        in_blocks = re.compile(re.escape(self.layers_path) + r"\.\d+\.(.*)")
        outside_attention = [(n, m) for n, m in self.modules.items() if (found := in_blocks.fullmatch(n))
                             and found.group(1) != attn_rel and not found.group(1).startswith(attn_rel + ".")]
        # experts stored as one 3-D tensor, or as a list of parallel MLPs
        experts = [n for n, m in outside_attention
                   if any(p.dim() == 3 for p in m.parameters(recurse=False))
                   or (isinstance(m, nn.ModuleList) and len(m) > 1 and all(_has_projection(e) for e in m))]
        if experts:
            raise self.refuse(
                "its MLP is a mixture of experts (" + ", ".join(experts[:3]) + "). "
                "Locate-then-edit methods rewrite one MLP output projection so that the subject's key maps to a new "
                "value; here each token's MLP output is a router-weighted sum over experts picked per token, so no "
                "single weight does that. A plugin may declare an always-active shared expert instead "
                "(mixture_of_experts: shared_expert in the architecture schema)")

    # -- layout, head, norm ------------------------------------------------------------------------
    def layout(self, paths) -> str:
        layouts = {_dims(self.modules[p])[2] for p in paths}
        if len(layouts) != 1:
            raise self.refuse(f"its projections mix weight layouts ({', '.join(sorted(layouts))})")
        layout = layouts.pop()
        kind = "transformers Conv1D, weight [in, out]" if layout == "conv1d" else "nn.Linear, weight [out, in]"
        self.found("weight_layout", layout, HIGH, f"the rewritten projections are {kind}")
        return layout

    def head(self):
        embed_module, head_module = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        if embed_module is None or head_module is None:
            raise self.refuse("get_input_embeddings() / get_output_embeddings() return None: no token embedding or head")
        embed, head = self.names.get(id(embed_module)), self.names.get(id(head_module))
        self.found("embed", embed, HIGH, "get_input_embeddings()")
        tied = head_module.weight is embed_module.weight
        self.found("lm_head", head, HIGH, "get_output_embeddings()" + ("; shares the embedding's weight (tied)" if tied else "; its own weight"))
        return embed, head, tied

    def final_norm(self, layers_path: str, trace):
        parent = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
        siblings = [n for n, m in self.modules.items() if n.rsplit(".", 1)[0] == parent and n != layers_path
                    and "." in n and _is_norm(m)] if parent else [n for n, m in self.model.named_children() if _is_norm(m)]
        ran_after = [n for n in trace.order_after_blocks(layers_path) if n in siblings]
        how = "the norm beside the blocks that runs after them"
        if len(ran_after) == 1:
            ln_f = ran_after[0]
        elif len(siblings) == 1:
            ln_f, how = siblings[0], "the one norm beside the blocks"
        else:
            raise self.refuse(f"cannot tell the final norm among {', '.join(siblings) or 'no norm modules beside the blocks'}")
        self.found("ln_f", ln_f, HIGH if trace.ok else MEDIUM, how)
        return ln_f, self.norm_type(self.modules[ln_f])

    def norm_type(self, module) -> str:
        import torch.nn as nn

        cls = type(module).__name__
        if "rms" in cls.lower():
            return self.found("norm", "rmsnorm", HIGH, f"{cls}: RMS by name")
        if isinstance(module, nn.LayerNorm) or "layernorm" in cls.lower():
            return self.found("norm", "layernorm", HIGH, f"{cls}: a LayerNorm")
        biased = getattr(module, "bias", None) is not None
        return self.found("norm", "layernorm" if biased else "rmsnorm", MEDIUM,
                          f"{cls}: " + ("has a bias, as LayerNorm" if biased else "no bias, as RMSNorm"))

    # -- config keys -------------------------------------------------------------------------------
    def hidden_size(self) -> int:
        embed = self.model.get_input_embeddings()
        return int(embed.weight.shape[1])

    def config_keys(self, depth: int, hidden: int, inter: int) -> dict:
        keys = {"num_layers": self.key(DEPTH_KEYS, depth, "num_layers"),
                "hidden_size": self.key(HIDDEN_KEYS, hidden, "hidden_size"),
                "vocab_size": self.key(("vocab_size", "padded_vocab_size"), int(self.model.get_input_embeddings().weight.shape[0]), "vocab_size")}
        stated = [k for k in INTERMEDIATE_KEYS if self.config.get(k) == inter]
        if stated:
            keys["intermediate_size"] = stated[0]
            self.found("intermediate_size", stated[0], HIGH, f"config.json's {stated[0]} = {inter}, the MLP's width")
        elif inter == 4 * hidden:
            # a key the config leaves empty (it means "4 x hidden" there), else one it lacks; never one stating another width
            unset = [k for k in INTERMEDIATE_KEYS if k in self.config and self.config[k] is None] + \
                    [k for k in INTERMEDIATE_KEYS if k not in self.config]
            keys["intermediate_size"] = {"keys": unset[:1], "default_times_hidden": 4}
            self.found("intermediate_size", "4 x hidden", MEDIUM, f"config.json states no MLP width; the MLP is 4 x {hidden} wide")
        else:
            others = [k for k, v in self.config.items() if v == inter and isinstance(v, int) and not isinstance(v, bool)]
            if len(others) != 1:
                raise self.refuse(f"config.json states the MLP width ({inter}) under {'no key' if not others else ', '.join(others)}")
            keys["intermediate_size"] = others[0]
            self.found("intermediate_size", others[0], MEDIUM, f"the only config.json key equal to the MLP's width ({inter})")
        positions = [k for k in POSITION_KEYS if _is_count(self.config.get(k))]
        if positions:  # transformers' own names for it are certain; the others are read by their name only
            key = positions[0]
            keys["max_positions"] = self.found("max_positions", key, HIGH if key in POSITION_KEYS[:2] else MEDIUM,
                                               f"config.json's {key} = {self.config[key]}, the longest sequence by its name")
        return keys

    def key(self, candidates, value: int, what: str) -> str:
        stated = [k for k in candidates if self.config.get(k) == value]
        if not stated:
            stated = [k for k, v in self.config.items() if v == value and isinstance(v, int) and not isinstance(v, bool)
                      and re.search(r"layer|hidden|embd|embed|dim|vocab", k)]
            if len(stated) != 1:
                raise self.refuse(f"config.json states the model's {what.replace('_', ' ')} ({value}) under "
                                  f"{'no key' if not stated else 'several keys: ' + ', '.join(stated)}")
        self.found(what, stated[0], HIGH, f"config.json's {stated[0]} = {value}, as the model built from it has")
        return stated[0]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _defaults(gated: bool) -> dict:
    defaults = {k: {kk: dict(vv) for kk, vv in v.items()} for k, v in INFERRED_DEFAULTS.items()}
    if gated:
        defaults["mend"]["inner_params"]["roles"] = ["mlp_gate", "mlp_in", "mlp_out"]
    return defaults


# --- the traced forward pass ----------------------------------------------------------------------
class _ForwardTrace:
    """One forward pass on a few tokens (on the meta device for a model built there): the order modules ran in, and
    the tensors they took and returned (with copies, where they hold numbers, as they were when returned)."""

    def __init__(self, model, block0: str):
        import torch

        self.order: list[str] = []
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.copies: dict[str, Any] = {}  # a later in-place add into a recorded output (attention added into the MLP's) spares them
        handles = []
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(self._hook(name, keep=name.startswith(block0 + ".") or name == block0)))
        device = next(model.parameters(), torch.empty(0, device="meta")).device
        try:
            with torch.no_grad():
                if device.type == "meta":
                    model(input_ids=torch.zeros((1, 4), dtype=torch.long, device="meta"))
                else:
                    ids = torch.arange(3, 7, device=device).unsqueeze(0)
                    model(input_ids=ids, attention_mask=torch.ones_like(ids))
            self.ok = True
        except Exception:  # some models cannot run on the meta device; registration order stands in
            self.ok = False
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, keep: bool):
        def fn(module, args, output):
            self.order.append(name)
            if keep:
                self.inputs[name] = args[0] if args else None
                self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output
                if getattr(self.outputs[name], "is_meta", True) is False:
                    self.copies[name] = self.outputs[name].detach().clone()
        return fn

    def order_within(self, scope: str) -> list[str]:
        return [n for n in self.order if n.startswith(scope + ".")]

    def order_after_blocks(self, layers_path: str) -> list[str]:
        last = max((i for i, n in enumerate(self.order) if n.startswith(layers_path + ".")), default=len(self.order))
        return self.order[last + 1:]

    def output_of(self, name: str):
        return self.outputs.get(name)

    def returns(self, container: str, projection: str) -> bool:
        """Whether ``container`` returned ``projection``'s output (nothing added after it): the tensor itself, or on a
        model with weights the same numbers."""
        import torch

        out = self.outputs.get(container)
        if out is not None and out is self.outputs.get(projection):
            return True
        got, want = self.copies.get(container), self.copies.get(projection)
        return got is not None and want is not None and got.shape == want.shape and bool(torch.allclose(got, want))

    def feeds_activation(self, scope: str):
        """The input tensor of the activation module inside ``scope``, if exactly one ran."""
        activations = [n for n in self.order_within(scope) if re.search(r"act|gelu|silu|relu|swish", n.rsplit(".", 1)[-1], re.I)
                       and n in self.inputs]
        return self.inputs[activations[0]] if len(activations) == 1 else None


# --- module helpers -------------------------------------------------------------------------------
def _dims(module) -> tuple[int, int, str] | None:
    """(in, out, layout) of a projection: nn.Linear (and subclasses) or transformers' Conv1D."""
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, "linear"
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None and module.weight.dim() == 2:
        return int(module.weight.shape[0]), int(module.weight.shape[1]), "conv1d"
    return None


def _has_projection(module) -> bool:
    return any(_dims(m) for m in module.modules())


def _is_norm(module) -> bool:
    import torch.nn as nn

    return isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()


def _children(module, prefix: str):
    return [(f"{prefix}.{n}", m) for n, m in module.named_children()]


def _rel(path: str, block0: str) -> str:
    return path[len(block0) + 1:]


def _identifier(model_type: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", str(model_type).lower())
    return name if re.match(r"^[a-z]", name) else f"arch_{name}"


def value_point_problems(declaration: Mapping[str, Any], model) -> list[tuple[str, str, str]]:
    """A declared attn / mlp container whose output is not its output projection's (a traced forward pass of block 0,
    on the meta device or on a model with weights)."""
    modules = declaration["modules"]
    block0 = f"{modules['layers']}.0"
    trace = _ForwardTrace(model, block0)
    if not trace.ok:
        return []
    problems = []
    for role, projection in (("attn", "attn_out"), ("mlp", "mlp_out")):
        container, out = modules["layer"].get(role), modules["layer"].get(projection)
        if not container or not out or container == out:
            continue
        if f"{block0}.{container}" in trace.outputs and not trace.returns(f"{block0}.{container}", f"{block0}.{out}"):
            problems.append((f"/modules/layer/{role}", f"{container!r} returns more than {out!r}'s output (such as the "
                             "residual stream), so a value read or written there is not what the projection adds",
                             f"declare {role}: {out}"))
    return problems
