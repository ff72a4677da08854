"""SERAC, the method: load a trained editor and return the answerer."""
from __future__ import annotations

from ...editing.archive import check_archive_fits, load_module_tensors, read_archive
from ...errors import ArchiveError
from .. import TrainedEditMethod
from .answerer import SeracAnswerer
from .editor import STRUCTURAL_KEYS, SeracEditor, build_editor
from .features import frozen_features
from .task import SeracTask


class SERAC(TrainedEditMethod):
    name = "SERAC"
    schema = "serac"
    defaults = {
        # EasyEdit's SERAC training hparams where they apply, and this implementation's own keys
        "archive": None, "lr": 1e-5, "seed": 0, "cedit": 0.1, "cloc": 1.0,
        "max_iters": 100000, "batch_size": 10, "val_batch_size": 10, "val_every": 1000,
        "early_stop_patience": 40000, "early_stop_key": "loss/total_edit_val", "grad_clip": 100.0,
        "freeze_cntr": False, "small_name": None, "cf_num_layers": None, "cf_random_targets": True,
        "cls_encoder": "base", "cls_layer": 0, "cls_pooling": "subject", "cls_dim": None, "cls_lr": None,
        "cls_train_projection": True, "cls_threshold": 0.5, "device": None,
    }

    def apply(self, model, tok, requests, hparams, *, spec, weights, archive=None):
        hp = {**self.defaults, **hparams}
        device = next(model.parameters()).device
        editor, hp = self.load(archive or hp.get("archive"), model, spec, hp)
        editor.to(device).eval()
        features = frozen_features(hp, model, spec, tok, device)
        return SeracAnswerer(model, editor, features, tok, requests, float(hp["cls_threshold"])).eval()

    def load(self, archive, model, spec, hp) -> tuple[SeracEditor, dict]:
        if not archive:
            raise ArchiveError("SERAC needs a trained editor, and neither hparams['archive'] nor archive= names one",
                               fix="train one with `adapterkit train MODEL --hparams serac.yaml --train DATA --out DIR`, "
                                   "then set `archive: DIR` (or pass --archive DIR)")
        tensors, metadata, path = read_archive(archive, self.name)
        check_archive_fits(path, metadata, architecture=spec.name, shapes=None, hparams=hp,
                                    structural_keys=STRUCTURAL_KEYS)
        hp = {**hp, **{k: metadata["hparams"][k] for k in STRUCTURAL_KEYS if k in metadata["hparams"]}}
        editor = build_editor(model, spec, hp, feature_dim=int(metadata["feature_dim"]), vocab_size=int(metadata["vocab_size"]))
        load_module_tensors(editor, tensors, metadata.get("aliases") or {}, "", str(path))
        return editor, hp

    def make_task(self, model, tok, spec, hp, device, train_set):
        return SeracTask(model, tok, spec, hp, device, train_set)
