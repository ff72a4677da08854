"""`adapterkit eval`: edits measured the ways papers report them, with confidence intervals, resumable runs and reports.

- ``metrics``: the metric functions (teacher-forced accuracy, target probabilities, answers compared as text,
  n-gram entropy, perplexity);
- ``intervals``: means with 95 % confidence intervals;
- ``generation``: batched greedy decoding;
- ``chat``: prompts wrapped in a tokenizer's chat template;
- ``heldout``: the held-out texts perplexity is measured on;
- ``measure``: every metric of a set of requests on the weights now in a model;
- ``run``: the run loop (edit, measure, undo), rows.jsonl and resuming;
- ``report``: report.json, summary.md and plots of one run, and runs side by side.
"""
