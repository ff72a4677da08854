"""SERAC: Semi-Parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell et al., 2022,
"Memory-Based Model Editing at Scale").

The base model's weights never change. An edit is stored in an explicit memory; each query then goes
  1. to a scope classifier, which scores it against every stored edit (cosine similarities of projected
     frozen features of the base model, or of a MiniLM sentence encoder, squashed to a probability with
     a learned scale and threshold); if the best score is below one half the query is out of scope and
  2a. the untouched base model answers it; otherwise
  2b. a counterfactual model answers it, reading the matched edit in its context:
      ``edit prompt + new target + separator + query``.
Training (``train``) fits the classifier (in-scope: an edit's prompt and rephrases; out-of-scope: its
locality prompts and other edits' queries) and fine-tunes the counterfactual model to answer in-scope
queries with the edit's target. ``apply`` returns the *answerer*, a module routing each row of a batch.

The package follows those ideas: features.py (frozen features), scope.py (the scope classifier),
counterfactual.py (the counterfactual model and how it reads an edit), editor.py (what an archive
holds), answerer.py (what ``apply`` returns), task.py (training), method.py (the method itself).
"""
from .method import SERAC

__all__ = ["SERAC"]
