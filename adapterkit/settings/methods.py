"""Typed method settings: one frozen dataclass per method, on a shared base per family.

A hyperparameter file (EasyEdit's key names) is checked against the method's schema and then turned, once,
into its settings class with ``from_hparams``; the methods read attributes from then on. Each setting's
default lives here and nowhere else. Keys a class has no field for (EasyEdit files carry many) are kept in
``extra`` and written back by ``to_dict``, which gives what ran: every setting with its default filled in.

A field made with :func:`published` holds the method's published default; `detect` writes those into a
new hyperparameter file. The other fields are optional refinements that files leave out unless set.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, TypeVar, Union

S = TypeVar("S", bound="MethodSettings")

PUBLISHED = "published"


def published(default: Any):
    """A field whose default is the method's published value, written by `detect` (lists get a fresh copy each time)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={PUBLISHED: True})
    return field(default=default, metadata={PUBLISHED: True})


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """What every method's settings hold. ``extra``: keys of the hparams that are no setting of this method."""

    alg_name: str
    model_name: str | None = None      # the checkpoint detect read; its last path component names the stats folder
    architecture: str | None = None    # the plugin declaration detect used (informational)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def written_weights(self) -> list[str]:
        """The parameters an edit with these settings writes, by name (checked against offloading before any work)."""
        return []

    # EasyEdit keys this implementation accepts and does not read; they stay in ``extra``
    ignored: ClassVar[frozenset[str]] = frozenset()
    # other names for a setting (EasyEdit's): alias -> field; the field's own name wins when both are given
    aliases: ClassVar[Mapping[str, str]] = {}

    # --- building and writing back --------------------------------------------------------------
    @classmethod
    def setting_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_hparams(cls: type[S], hparams: Mapping[str, Any]) -> S:
        """Settings from a hyperparameter dict that passed the method's schema."""
        given = dict(hparams)
        for alias, name in cls.aliases.items():
            if alias in given:
                value = given.pop(alias)
                given.setdefault(name, value)
        names = set(cls.setting_names())
        return cls(**{k: v for k, v in given.items() if k in names}, extra={k: v for k, v in given.items() if k not in names})

    def __post_init__(self):
        # a float setting given as an integer (YAML's 4, a published default's 15000) is held as the float it means
        for name in _float_fields(type(self)):
            value = getattr(self, name)
            if type(value) is int:
                object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        """The settings that ran, as a hyperparameter dict: published settings always, others when set, then ``extra``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.metadata.get(PUBLISHED)):
                out[f.name] = copy.deepcopy(value)
        return {**out, **copy.deepcopy(self.extra)}

    def replace(self: S, **changes) -> S:
        return dataclasses.replace(self, **changes)

    @classmethod
    def published_defaults(cls) -> dict[str, Any]:
        """The published defaults, in field order: what `detect` writes before the architecture's own values."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.metadata.get(PUBLISHED):
                out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return out

    @classmethod
    def required(cls) -> list[str]:
        """Settings without a default: a hyperparameter file must give them (detect fills them from the architecture)."""
        return [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


@functools.lru_cache(maxsize=None)
def _float_fields(cls) -> frozenset[str]:
    """Fields typed float (or float | None)."""
    hints = typing.get_type_hints(cls)
    return frozenset(name for name in cls.setting_names() if float in _members(hints[name]))


def _members(hint) -> tuple:
    """The types a hint allows: (int, str, NoneType) for ``int | str | None``, (float,) for ``float``."""
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


# --- locate-then-edit: ROME, MEMIT, AlphaEdit, PMET ------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LocateThenEditSettings(MethodSettings):
    """What ROME, MEMIT and PMET share: layers, fact token, module templates, the value loss, statistics and
    context templates. ROME's published value-optimisation and statistics settings are the family's."""

    # where to edit
    layers: list[int]
    fact_token: str = published("subject_last")
    # the target-value optimisation (values.py)
    v_num_grad_steps: int = published(20)
    v_lr: float = published(0.5)
    v_weight_decay: float = published(0.5)
    kl_factor: float = published(0.0625)
    # second-moment statistics of the keys (stats.py)
    mom2_dataset: str = published("wikipedia")
    mom2_n_samples: int = published(100000)
    mom2_dtype: str = published("float32")
    clamp_norm_factor: float
    mom2_adjustment: bool
    context_template_length_params: list[list[int]]
    nll_loss_factor: float = 1.0
    v_batch_size: int = 16                     # requests whose values are optimised together
    v_loss_layer: int | None = None            # the layer whose output gives the loss's logits (None: the model's own)
    mom2_corpus: str | None = None             # a local corpus to compute missing statistics from
    stats_dir: str = "stats"
    # context templates: a fixed list, or texts sampled from the model for each [length, count]
    context_templates: list[str] | None = None
    context_template_seed: int = 0
    # module templates ('{}' where the layer index goes) and module paths
    rewrite_module_tmp: str
    layer_module_tmp: str
    mlp_module_tmp: str | None = None
    attn_module_tmp: str | None = None
    ln_f_module: str | None = None
    lm_head_module: str | None = None

    ignored = frozenset({"device", "layer_selection", "model_parallel", "fp16", "batch_size"})

    @property
    def rewrite_templates(self) -> list[str]:
        """The modules whose weights an edit rewrites."""
        return [self.rewrite_module_tmp]

    @property
    def written_weights(self) -> list[str]:
        return [f"{template.format(layer)}.weight" for layer in self.layers for template in self.rewrite_templates]


@dataclass(frozen=True, kw_only=True)
class ROMESettings(LocateThenEditSettings):
    clamp_norm_factor: float = published(4)
    mom2_adjustment: bool = published(False)
    context_template_length_params: list[list[int]] = published([[5, 10], [10, 10]])
    mlp_module_tmp: str = field()               # required here (field() overrides the family's None)


@dataclass(frozen=True, kw_only=True)
class MEMITSettings(LocateThenEditSettings):
    clamp_norm_factor: float = published(0.75)
    mom2_adjustment: bool = published(True)
    context_template_length_params: list[list[int]] = published([[10, 5]])
    v_batch_size: int = published(16)
    mom2_update_weight: float = published(15000)    # lambda in Delta = R K^T (lambda C + K K^T)^-1
    # in a stream of batches (adapterkit.EditStream): keep the earlier batches' keys K_p and preserve them beside C,
    # Delta = R K^T (lambda C + K_p K_p^T + K K^T)^-1 (MEMIT's derivation with the earlier edits as kept memories)
    stream_preserve_edits: bool = False


@dataclass(frozen=True, kw_only=True)
class AlphaEditSettings(MEMITSettings):
    """MEMIT's settings (AlphaEdit's reference files publish MEMIT's values) and AlphaEdit's two own."""
    nullspace_threshold: float = published(2e-2)    # directions of C with eigenvalues below this may change
    L2: float = published(10)                       # the update's own penalty, in place of lambda C
    stream_preserve_edits: bool = True              # the paper's sequential algorithm: K_p K_p^T in every later update

    # EasyEdit's cache of the projection (this implementation keeps it with the statistics)
    ignored = MEMITSettings.ignored | {"P_loc"}


@dataclass(frozen=True, kw_only=True)
class PMETSettings(MEMITSettings):
    clamp_norm_factor: float = published(1)
    nll_loss_factor: float = published(1)
    rewrite_module_tmp: str | None = None
    rewrite_module_tmps: list[str]                  # each equal to attn_module_tmp or mlp_module_tmp
    mlp_module_tmp: str = field()
    attn_module_tmp: str = field()

    @property
    def rewrite_templates(self) -> list[str]:
        return list(self.rewrite_module_tmps)


# --- trained editors: MEND, SERAC ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TrainedEditorSettings(MethodSettings):
    """What the shared trainer reads (editing/training.py), and where the trained editor is."""

    archive: str | None = published(None)      # the directory `adapterkit train` wrote (or its editor.safetensors)
    lr: float
    seed: int
    cedit: float = published(0.1)               # weight of the edit loss
    cloc: float = published(1.0)                # weight of the locality loss
    max_iters: int = published(100000)
    batch_size: int                             # edits per training episode
    val_batch_size: int
    val_every: int = published(1000)            # validate and checkpoint every this many steps
    val_steps: int | None = None                # validation batches per validation; None: the whole set
    accumulate_bs: int = 1                      # episodes per optimiser step
    early_stop_patience: int
    early_stop_key: str = published("loss/total_edit_val")
    grad_clip: float = published(100.0)
    skip_malformed: bool = False                # leave malformed training records out instead of stopping
    device: int | str | None = published(None)  # None: where the model is; "auto": a GPU when present; N: cuda:N

    ignored = frozenset({"dropout", "train_base"})
    aliases = {"val_interval": "val_every"}

    @property
    def minimise(self) -> bool:
        """Whether early_stop_key is a loss or perplexity (smaller is better) rather than an accuracy."""
        key = self.early_stop_key.lower()
        return any(word in key for word in ("loss", "nll", "ppl", "perplexity"))


@dataclass(frozen=True, kw_only=True)
class MENDSettings(TrainedEditorSettings):
    """EasyEdit's MEND training settings; the per-architecture inner_params come from detect."""

    lr: float = published(1e-6)
    seed: int = published(42)
    batch_size: int = published(1)
    val_batch_size: int = published(5)
    early_stop_patience: int = published(20000)
    inner_params: list[str]                     # the weights MEND edits, by parameter name
    edit_lr: float = published(1e-4)            # the learned per-weight edit step's start
    lr_lr: float = published(1e-4)              # its learning rate
    # other records' prompts joining each edit's locality inputs in training (the paper's unrelated x_loc);
    # 0 keeps EasyEdit's CounterFact setting, the record's own locality prompt alone
    loc_unrelated: int = published(0)
    # the editor network
    rank: int = published(1920)
    n_hidden: int = published(1)
    init: str = published("id")
    norm: bool = published(True)
    combine: bool = published(True)
    x_only: bool = published(False)
    delta_only: bool = published(False)
    one_sided: bool = published(False)
    shared: bool = published(True)
    act: str = published("relu")
    mlp_class: str = published("IDMLP")
    norm_warmup: int = published(32)            # training edits that fill the running mean / std first
    random_targets: bool = published(True)      # train on edits with targets drawn from the training answers

    ignored = TrainedEditorSettings.ignored | {"hidden_dim", "cbase"}

    @property
    def written_weights(self) -> list[str]:
        return list(self.inner_params)


@dataclass(frozen=True, kw_only=True)
class SERACSettings(TrainedEditorSettings):
    """EasyEdit's SERAC training settings where they apply, and this implementation's classifier and
    counterfactual-model settings."""

    lr: float = published(1e-5)
    seed: int = published(0)
    batch_size: int = published(10)
    val_batch_size: int = published(10)
    early_stop_patience: int = published(40000)
    # the counterfactual model
    freeze_cntr: bool = published(False)
    small_name: str | None = published(None)
    cf_num_layers: int | None = published(None)
    cf_random_targets: bool = published(True)
    # the scope classifier
    cls_encoder: str = published("base")
    cls_layer: int = published(0)
    cls_pooling: str = published("subject")
    cls_dim: int | None = published(None)
    cls_lr: float | None = published(None)
    cls_train_projection: bool = published(True)
    cls_threshold: float = published(0.5)

    ignored = TrainedEditorSettings.ignored | {"edit_lr", "lr_lr", "cls_name", "cls_class", "cross_attend", "cos",
                                               "square", "dist_heads", "soft_weighting", "supervised"}
