"""The method contract: what the core needs from an editing method, built in or from a pip package.

A method is an object of an ``EditMethod`` subclass, handed to the core through the ``register_methods``
hook (``register(MyMethod())``). Its hyperparameters are checked against ``schema`` and built, once, into
its ``settings_class``; ``apply`` then edits with those settings. ``examples/adapterkit-scale/`` is a
complete third-party method.
"""
from __future__ import annotations

import abc
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from ..errors import ArchiveError
from ..settings.methods import MethodSettings

if TYPE_CHECKING:
    import torch

    from ..editing.training import EditorTask

    from ..editing.result import EditResult
    from ..requests import EditRequest
    from ..arch.schema import SchemaSource
    from ..arch.spec import ArchSpec


class EditMethod(abc.ABC):
    """An editing method.

    name:             the ``alg_name`` hyperparameter files use (ROME, MEMIT, ...), matched case-insensitively.
    schema:           its hyperparameter schema: the name of one shipped in schemas/ (``"rome"``), a file shipped
                      in the method's own package (a path, or ``importlib.resources.files(package) / "x.schema.json"``),
                      or the schema as a dict. It may ``$ref`` the shipped ones by their ``$id``.
    settings_class:   the MethodSettings subclass its hyperparameters become (defaults live there).
    template_keys:    hparams key -> module role (or list of roles); detect writes the architecture's templates.
    arch_keys:        hparams keys whose value the architecture derives (``v_loss_layer``).
    layer_rules_from: another method whose shape rules (``layers``, ``inner_params``, ``mom2_update_weight``) this one takes from a
                      declaration that has none of its own (PMET takes MEMIT's).
    trainable:        an editor is trained before editing (see TrainedEditMethod).
    distribution:     set by the registry: the distribution that registered the method.

    These, and ``settings``, belong to the class, so a class without ``apply`` describes the method: a plugin
    may register ``LazyMethod(name, "package.module:Class", description=Described)``, where ``Described`` is a
    torch-free class that ``Class`` subclasses; detect and validate then read ``Described`` and never import
    ``package.module`` (the built-in methods' descriptions are in ``described.py``).
    """

    name: ClassVar[str]
    schema: ClassVar[SchemaSource]
    settings_class: ClassVar[type[MethodSettings]]
    template_keys: ClassVar[Mapping[str, str | list[str]]] = {}
    arch_keys: ClassVar[tuple[str, ...]] = ()
    layer_rules_from: ClassVar[str | None] = None
    trainable: ClassVar[bool] = False
    distribution: str = "?"

    @classmethod
    def settings(cls, hparams: Mapping[str, Any]) -> MethodSettings:
        """This method's settings from hyperparameters that passed its schema."""
        return cls.settings_class.from_hparams(hparams)

    @abc.abstractmethod
    def apply(self, model, tok, requests: Sequence[EditRequest], settings: MethodSettings, *, spec: ArchSpec,
              ledger: EditResult, archive=None) -> Any:
        """Edit ``model`` for ``requests`` (normalised EditRequests) as ``settings`` say.

        Change weights only through ``ledger.add(name, delta)`` (or ``editing.update.apply_update``): it keeps
        each original once, so the edit can be undone bit for bit. ``archive``: a trained editor that takes the
        place of ``settings.archive`` (trained methods). Return an object that answers queries instead of
        ``model`` (SERAC does), or None.
        """

    def carries_state(self, settings: MethodSettings) -> bool:
        """Whether ``apply`` keeps state from one batch of a stream to the next (``adapterkit.EditStream``).

        A method that says yes accepts ``carried=`` in ``apply``, a ``streams.carried.CarriedState``: it reads
        what the earlier batches left (``carried.keys_moment(weight)``: their keys' second moment at that weight)
        and records this batch's (``carried.add_keys(weight, keys)``). The stream saves it with each batch and
        rebuilds it on restore and load; a lone ``edit`` passes no ``carried``.
        """
        return False


# The module templates the locate-then-edit methods read, by role.
LOCATE_THEN_EDIT_TEMPLATES = {
    "rewrite_module_tmp": "mlp_out",
    "layer_module_tmp": "layer",
    "mlp_module_tmp": "mlp",
    "attn_module_tmp": "attn",
    "ln_f_module": "ln_f",
    "lm_head_module": "lm_head",
}


class LocateThenEditMethod(EditMethod):
    """ROME, MEMIT, PMET: find the MLP that stores a fact, then write a new value into it."""

    template_keys = LOCATE_THEN_EDIT_TEMPLATES
    arch_keys = ("v_loss_layer",)

    def carries_state(self, settings) -> bool:
        # MEMIT, AlphaEdit and PMET: the earlier edits' keys, preserved beside the statistics (stream_preserve_edits)
        return bool(getattr(settings, "stream_preserve_edits", False))

    def edit_layers(self, model, settings, spec) -> tuple[int, list[int]]:
        """(the model's depth, the settings' layers checked against it, in order)."""
        from ..settings.against_model import check_layers

        num_layers = spec.num_layers(model.config)
        return num_layers, check_layers(settings.layers, num_layers)


def _loaded_editor_key(path, spec: ArchSpec, settings: MethodSettings) -> tuple:
    """What decides the editor load_editor returns, beside the model itself: the archive file's identity and
    contents' stamp, the architecture, and the settings it was checked against."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size, spec.name, repr(sorted(settings.to_dict().items())))


class TrainedEditMethod(EditMethod):
    """A method whose editor is trained first (MEND, SERAC). ``adapterkit.train`` trains it; ``apply`` loads
    the archive with ``load_editor``, the one template both use.

    structural_keys: settings that decide the editor's shape; an archive loads only where they are the same.
    """

    trainable = True
    structural_keys: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def make_task(self, model, tok, spec: ArchSpec, settings: MethodSettings, device,
                  train_set: Sequence[EditRequest]) -> EditorTask:
        """A fresh editor and what the trainer needs to train it on ``train_set``."""

    @abc.abstractmethod
    def build_editor(self, model, spec: ArchSpec, settings: MethodSettings, metadata: Mapping[str, Any]) -> torch.nn.Module:
        """The untrained editor that an archive with ``metadata`` holds the tensors of."""

    def archive_shapes(self, model, settings: MethodSettings) -> Mapping[str, Sequence[int]] | None:
        """The model weights the editor edits and their shapes, checked against the archive's (None: not checked)."""
        return None

    def load_editor(self, archive, model, spec: ArchSpec, settings: MethodSettings) -> torch.nn.Module:
        """The trained editor in ``archive``, after checking that it fits this model and these settings."""
        from ..editing.archive import archive_file, check_archive_fits, load_module_tensors, read_archive

        if not archive:
            raise ArchiveError(f"{self.name} needs a trained editor, and neither hparams['archive'] nor archive= names one",
                               fix=f"train one with `adapterkit train MODEL --hparams {self.name.lower()}.yaml --train DATA "
                                   "--out DIR`, then set `archive: DIR` (or pass --archive DIR)")
        key = _loaded_editor_key(archive_file(archive), spec, settings)
        kept = getattr(self, "_last_editor", None)
        if kept is not None and kept[0] == key and kept[1]() is model:
            return kept[2]
        tensors, metadata, path = read_archive(archive, self.name)
        check_archive_fits(path, metadata, architecture=spec.name, shapes=self.archive_shapes(model, settings),
                           hparams=settings.to_dict(), structural_keys=self.structural_keys)
        editor = self.build_editor(model, spec, settings, metadata)
        load_module_tensors(editor, tensors, metadata.get("aliases") or {}, "", str(path))
        # Edit after edit with one archive (the usual run) reads and checks it once: at 7B a MEND editor is ~1 GB.
        self._last_editor = (key, weakref.ref(model), editor)
        return editor

    def train(self, model, tok, spec: ArchSpec, settings: MethodSettings, train_set: Sequence[EditRequest],
              val_set: Sequence[EditRequest], out_dir, *, resume: bool = False, device=None, progress: bool = True,
              on_step=None):
        """Train an editor for ``model`` (of the architecture ``spec``) into ``out_dir`` (``adapterkit.train`` reads
        the records and calls this)."""
        from ..editing import training
        from ..editing.hooks import frozen

        dev = training.resolve_device(device if device is not None else settings.device, model)
        model.to(dev)
        training.seed_everything(settings.seed)
        with frozen(model):
            task = self.make_task(model, tok, spec, settings, dev, train_set)
            return training.train(task, train_set, val_set, settings, out_dir, resume=resume, progress=progress,
                                  on_step=on_step)
