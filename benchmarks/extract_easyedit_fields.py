"""Write schemas/easyedit_fields.json: the fields of EasyEdit's hyperparameter dataclasses, per method.

adapterkit reads EasyEdit hyperparameter files; it must not warn about keys EasyEdit itself uses, and
`adapterkit detect --format easyedit` must write exactly the fields EasyEdit's dataclass takes. Both read the
JSON this script writes. The dataclasses are parsed (``ast``), never imported, from a copy of EasyEdit's
sources: the one committed under tests/data/easyedit_hparams/ (see its README.md) or a checkout.

    python benchmarks/extract_easyedit_fields.py [EASYEDIT_ROOT] [--commit SHA]

For each method it records every field in declaration order with its annotation and, where the dataclass
gives one, its default (a field without one is required: ``cls(**config)`` fails without it), and the values
of EasyEdit's reference file for the method (hparams/<METHOD>/gpt2-xl.yaml), which `detect --format easyedit`
writes for the fields adapterkit has no setting for. The same for the training dataclasses EasyEdit's trainer
loads MEND's and SERAC's files with (hparams/TRAINING/<METHOD>/, keyed ``alg``), which `detect --format
easyedit-training` writes, and for the multimodal ones of both kinds, whose files adapterkit recognises and refuses.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "data" / "easyedit_hparams"
OUT = ROOT / "schemas" / "easyedit_fields.json"

# alg_name -> (dataclass file, class name, reference hparams file)
DATACLASSES = {
    "ROME": ("easyeditor/models/rome/rome_hparams.py", "ROMEHyperParams", "ROME/gpt2-xl.yaml"),
    "MEMIT": ("easyeditor/models/memit/memit_hparams.py", "MEMITHyperParams", "MEMIT/gpt2-xl.yaml"),
    "AlphaEdit": ("easyeditor/models/alphaedit/AlphaEdit_hparams.py", "AlphaEditHyperParams", "AlphaEdit/gpt2-xl.yaml"),
    "PMET": ("easyeditor/models/pmet/pmet_hparams.py", "PMETHyperParams", "PMET/gpt-j-6B.yaml"),
    "MEND": ("easyeditor/models/mend/mend_hparams.py", "MENDHyperParams", "MEND/gpt2-xl.yaml"),
    "SERAC": ("easyeditor/models/serac/serac_hparams.py", "SERACHparams", "SERAC/gpt2-xl.yaml"),
}
# EasyEdit's trainer's dataclasses: alg -> (dataclass file, class name, reference hparams file)
TRAINING = {
    "MEND": ("easyeditor/trainer/training_hparams/mend_training_hparams.py", "MENDTrainingHparams",
             "TRAINING/MEND/gpt2-xl.yaml"),
    "SERAC": ("easyeditor/trainer/training_hparams/serac_training_hparams.py", "SERACTrainingHparams",
              "TRAINING/SERAC/gpt2-xl.yaml"),
}
# EasyEdit's multimodal variants: files for them are recognised and refused, by these classes' own fields
MULTIMODAL = {
    "MEND": ("easyeditor/models/mend/mend_multimodal_hparams.py", "MENDMultimodalHparams"),
    "SERAC_MULTI": ("easyeditor/models/serac/serac_multimodal_hparams.py", "SERACMultimodalHparams"),
}
TRAINING_MULTIMODAL = {
    "MEND": ("easyeditor/trainer/training_hparams/mend_multimodal_training_hparams.py", "MENDMultimodalTrainingHparams"),
    "SERAC_MULTI": ("easyeditor/trainer/training_hparams/serac_multimodal_training_hparams.py",
                    "SERACMultimodalTrainingHparams"),
}


def dataclass_fields(source: Path, class_name: str) -> dict[str, dict]:
    """The annotated class attributes of ``class_name`` in ``source``, in order (a repeated one once, where first declared)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None:
        raise SystemExit(f"{source}: no class {class_name}")
    fields: dict[str, dict] = {}
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            entry = {"type": ast.unparse(statement.annotation)}
            if statement.value is not None:
                entry["default"] = ast.literal_eval(statement.value)
            name = statement.target.id
            # a dataclass keeps a re-declared field at its first position, with the last declaration's default
            fields[name] = {**fields.get(name, {}), **entry} if "default" in entry else fields.get(name, entry)
    return fields


def extract(root: Path, commit: str) -> dict:
    hparams_dir = root / "hparams" if (root / "hparams").is_dir() else root

    def with_reference(dataclasses: dict) -> dict:
        out = {}
        for alg, (path, class_name, reference) in dataclasses.items():
            fields = dataclass_fields(root / path, class_name)
            values = yaml.safe_load((hparams_dir / reference).read_text(encoding="utf-8"))
            # as EasyEdit reads them: PyYAML leaves 1e-6 a string, the dataclass's loader makes it a float
            values = {k: float(v) if isinstance(v, str) and fields.get(k, {}).get("type") == "float" else v
                      for k, v in values.items()}
            out[alg] = {"class": class_name, "file": path, "fields": fields,
                        "reference_file": f"hparams/{reference}", "reference_values": values}
        return out

    def fields_only(dataclasses: dict) -> dict:
        return {alg: {"class": class_name, "file": path, "fields": dataclass_fields(root / path, class_name)}
                for alg, (path, class_name) in dataclasses.items()}

    return {"source": {"repository": "https://github.com/zjunlp/EasyEdit", "commit": commit,
                       "written_by": "benchmarks/extract_easyedit_fields.py"},
            "methods": with_reference(DATACLASSES), "multimodal": fields_only(MULTIMODAL),
            "training": with_reference(TRAINING), "training_multimodal": fields_only(TRAINING_MULTIMODAL)}


def committed_commit() -> str:
    readme = (COMMITTED / "README.md").read_text(encoding="utf-8")
    return next(line.split("`")[1] for line in readme.splitlines() if line.startswith("Commit:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=COMMITTED,
                        help="EasyEdit's sources: a checkout, or the committed copy (default)")
    parser.add_argument("--commit", help="the EasyEdit commit the sources are (default: the committed copy's)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    document = extract(args.root, args.commit or committed_commit())
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: " + ", ".join(f"{alg} {len(m['fields'])} fields" for alg, m in document["methods"].items())
          + "; training: " + ", ".join(f"{alg} {len(m['fields'])} fields" for alg, m in document["training"].items()))


if __name__ == "__main__":
    main()
