"""`adapterkit trace`: causal tracing of facts a model knows."""
from __future__ import annotations

import sys

from .command import Command, need_tokenizer, placement_args, placement_kwargs


def arguments(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--data", required=True, help="facts: CounterFact / EasyEdit records with the true answer (ground_truth)")
    p.add_argument("--out", required=True, help="directory for trace.json and the trace_<kind>.png heat maps")
    p.add_argument("--samples", type=int, default=10, help="noise samples per fact (default 10, as the paper)")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="states to restore: hidden, mlp, attn (default all three)")
    p.add_argument("--window", type=int, default=10, help="MLP / attention layers restored together (default 10, as the paper)")
    p.add_argument("--noise-factor", type=float, default=3.0, help="noise std in units of the subject embeddings' std (default 3)")
    p.add_argument("--limit", type=int, help="trace at most this many known facts")
    placement_args(p)


def run_trace(args) -> int:
    from pathlib import Path

    from ..checkpoints.loading import load_model
    from ..requests import load_requests
    from ..tracing.trace import KIND_LABELS, TOKEN_KIND_LABELS, TraceSettings, causal_trace, write_trace
    from ..tracing.plot import plot_available, plot_trace

    settings = TraceSettings(samples=args.samples, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
                             window=args.window, noise_factor=args.noise_factor, limit=args.limit)
    placement = placement_kwargs(args)
    facts = load_requests(args.data)
    model, tok = load_model(args.model_path, **placement)
    need_tokenizer(tok, args.model_path)
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
        token_kind, layer, strongest = result.strongest(kind)
        print(f"{KIND_LABELS[kind]}: indirect effect at the last subject token peaks at layer {result.peak(kind)} (+{effect:.3f}); "
              f"strongest overall at the {TOKEN_KIND_LABELS[token_kind]}, layer {layer} (+{strongest:.3f})")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if result.facts else 1


COMMANDS = [Command('trace', run_trace, arguments,
        help="causal tracing (ROME paper): which layers carry facts the model knows; JSON and heat maps")]
