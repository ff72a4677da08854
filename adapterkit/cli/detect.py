"""`adapterkit detect`: write ready hyperparameters for a local checkpoint."""
from __future__ import annotations

import sys

from .command import Command, partial_arg, registry


def arguments(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--method", default="ROME", help="ROME, MEMIT, AlphaEdit, PMET, MEND, SERAC or a plugin's method (default ROME)")
    p.add_argument("-o", "--output", help="YAML file to write (default: print)")
    p.add_argument("--explain", action="store_true", help="print (to stderr) each role's module, and how it was found")
    p.add_argument("--layers", type=int, nargs="+", help="edit these layers instead of those the architecture's rule picks")
    p.add_argument("--format", choices=["adapterkit", "easyedit", "easyedit-training"], default="adapterkit",
                   help="easyedit: exactly the fields EasyEdit's own hyperparameter dataclass for the method loads; "
                        "easyedit-training: those of the dataclass EasyEdit's trainer loads (MEND, SERAC)")
    partial_arg(p)
    p.add_argument("--trace", metavar="FILE",
                   help="choose the edit layers by causal tracing: facts the model knows (CounterFact / EasyEdit "
                        "records, the first 50 known ones are traced) or a trace.json written by `adapterkit trace`")


def run_detect(args) -> int:
    from ..arch.detect import detect, write_yaml
    from ..files.atomic import check_writable

    if args.output:
        check_writable(args.output, what="hyperparameter file", directory=False)
    hparams = detect(args.model_path, method=args.method, layers=args.layers, allow_partial=args.allow_partial_weights)
    _say_where_the_declaration_came_from(hparams, explain=args.explain)
    comment = None
    if args.trace:  # after the checks above, which take a moment where a trace takes minutes
        from ..tracing.trace import check_traceable, load_trace, provenance

        check_traceable(hparams)
        trace = load_trace(args.trace, args.model_path)
        hparams = detect(args.model_path, method=args.method, allow_partial=args.allow_partial_weights, trace=trace)
        comment = provenance(trace, hparams["layers"], args.trace)
    architecture = hparams.get("architecture")  # EasyEdit's fields have no place for it
    method = hparams["alg_name"]
    if args.format != "adapterkit":
        hparams, comment = _as_easyedit(hparams, args.model_path, comment, training=args.format == "easyedit-training")
    text = write_yaml(hparams, args.output, comment)
    if args.output:
        print(f"wrote {args.output} ({method}, architecture {architecture}, layers {hparams.get('layers', '-')})",
              file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _as_easyedit(hparams, model_path, comment, *, training: bool = False):
    from ..settings.easyedit import dataclass_info, to_easyedit

    settings = registry().method_description(hparams["alg_name"]).settings(hparams)
    easyedit, from_reference, paths_not_here = to_easyedit(settings, str(model_path), training=training)
    info = dataclass_info(settings.alg_name, training=training)
    form = "easyedit-training" if training else "easyedit"
    note = f"EasyEdit's {info['class']} ({info['file']}) fields, written by `adapterkit detect --format {form}`"
    if from_reference:
        note += (f"\nfrom EasyEdit's reference file {info['reference_file']} (review them): "
                 + ", ".join(from_reference))
    for path_note in paths_not_here:
        note += f"\nNOT THERE: {path_note}"
    return easyedit, f"{comment}\n{note}" if comment else note


def _say_where_the_declaration_came_from(hparams, explain: bool) -> None:
    spec = hparams.spec
    if hparams.inference is not None:
        print(f"adapterkit: no plugin declares model_type {spec.model_types[0]!r}: this declaration was INFERRED from "
              f"the model's modules (confidence: {hparams.inference.confidence}); check it with --explain, and make it a "
              f"plugin with `adapterkit new-plugin`", file=sys.stderr)
        if explain:
            print(hparams.inference.table(), file=sys.stderr)
    elif explain:
        print(f"declaration {spec.name!r} from the plugin {spec.plugin} ({spec.distribution} {spec.version}): {spec.source}",
              file=sys.stderr)
        modules = spec.declaration["modules"]
        for role in ("embed", "layers", *modules["layer"], "ln_f", "lm_head"):
            print(f"  {role:<9} {spec.template(role) if role != 'layers' else spec.layers_path}", file=sys.stderr)


COMMANDS = [Command('detect', run_detect, arguments,
        help="write a hyperparameter YAML for a local checkpoint directory or GGUF file")]
