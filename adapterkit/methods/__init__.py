"""Editing methods. Each method is one module beside its paper; this file holds the contract they share.

A method plugin registers objects following ``EditMethod`` through the ``register_methods`` hook.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping


class EditMethod:
    """What the core needs from an editing method.

    name:          the ``alg_name`` used in hparams files (ROME, MEMIT, ...).
    schema:        name of the hparams schema in schemas/ (``<schema>.schema.json``).
    defaults:      architecture-independent default hyperparameters.
    template_keys: hparams key -> module role (or list of roles); detect fills in the architecture's templates.
    arch_keys:     hparams keys whose value the architecture derives (``v_loss_layer``).
    trainable:     True for methods that need a trained editor archive (MEND, SERAC).
    """

    name: ClassVar[str]
    schema: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}
    template_keys: ClassVar[Mapping[str, str | list[str]]] = {}
    arch_keys: ClassVar[tuple[str, ...]] = ()
    trainable: ClassVar[bool] = False
    distribution: str = "?"

    def apply(self, model, tok, requests, hparams: Mapping[str, Any], *, spec, weights) -> Any:
        """Edit ``model`` for ``requests``; change weights only through ``weights.add(name, delta)``.

        May return an object that answers queries instead of ``model`` (SERAC does); None otherwise.
        """
        raise NotImplementedError


class TrainedEditMethod(EditMethod):
    """A method whose editor is trained first (MEND, SERAC); ``make_task`` gives the trainer its task."""

    trainable = True

    def make_task(self, model, tok, spec, hp, device, train_set):
        """An object with the editor, its parameter groups, ``train_step`` and ``validate`` (editing/training.py)."""
        raise NotImplementedError

    @classmethod
    def train(cls, model, tok, hparams, train_path, val_path, out_dir, *, resume=False, device=None,
              progress=True, on_step=None, train_requests=None, val_requests=None):
        """Train an editor for ``model`` on the records of ``train_path`` (validated on ``val_path``) into ``out_dir``."""
        from ..editing import batches, training
        from ..editing.hooks import frozen
        from ..registry import get_registry

        method = cls()
        hp = {**method.defaults, **hparams}
        train_set, val_set = batches.load_sets(hp, train_path, val_path, train_requests, val_requests)
        spec = get_registry().for_model(model)
        dev = training.resolve_device(device if device is not None else hp.get("device"), model)
        model.to(dev)
        training.seed_everything(int(hp["seed"]))
        with frozen(model):
            task = method.make_task(model, tok, spec, hp, dev, train_set)
            return training.train(task, train_set, val_set, hp, out_dir, resume=resume, progress=progress, on_step=on_step)


# ROME-family methods read the same module templates.
LOCATE_THEN_EDIT_TEMPLATES = {
    "rewrite_module_tmp": "mlp_out",
    "layer_module_tmp": "layer",
    "mlp_module_tmp": "mlp",
    "attn_module_tmp": "attn",
    "ln_f_module": "ln_f",
    "lm_head_module": "lm_head",
}


# ROME's published value-optimisation and statistics settings, shared by the locate-then-edit methods.
LOCATE_THEN_EDIT_DEFAULTS = {
    "fact_token": "subject_last",
    "v_num_grad_steps": 20,
    "v_lr": 0.5,
    "v_weight_decay": 0.5,
    "kl_factor": 0.0625,
    "mom2_dataset": "wikipedia",
    "mom2_n_samples": 100000,
    "mom2_dtype": "float32",
}


class LocateThenEditMethod(EditMethod):
    """ROME, MEMIT, PMET: find the MLP that stores a fact, then write a new value into it."""

    template_keys = LOCATE_THEN_EDIT_TEMPLATES
    arch_keys = ("v_loss_layer",)

    def settings(self, model, hparams, spec) -> tuple[dict, int, list[int]]:
        """(hparams with this method's defaults, the model's depth, the edit layers checked against it)."""
        from ..editing.keys import check_layers

        hp = {**self.defaults, **hparams}
        num_layers = spec.num_layers(model.config)
        return hp, num_layers, check_layers(hp["layers"], num_layers)


def builtin_methods() -> list[EditMethod]:
    """The methods that ship with adapterkit (imported here so `import adapterkit` stays light)."""
    import importlib

    return [getattr(importlib.import_module(f"adapterkit.methods.{module}"), cls)() for module, cls in BUILTIN]


BUILTIN = [("rome", "ROME"), ("memit", "MEMIT"), ("pmet", "PMET"), ("mend", "MEND"), ("serac", "SERAC")]
