"""Batches of edit requests for training a learned editor: the training order, validation batches,
the training and validation sets, and the augmentations (random targets, unrelated locality inputs)."""
from __future__ import annotations

import dataclasses
import random
import zlib
from os import PathLike
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ..requests import EditRequest

if TYPE_CHECKING:
    from ..settings.methods import TrainedEditorSettings


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The training records of ``step``: consecutive slices of a per-epoch permutation drawn from the seed."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, slot = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[slot * batch_size: (slot + 1) * batch_size].tolist()


def validation_batches(requests: Sequence[EditRequest], settings: TrainedEditorSettings) -> list[list[EditRequest]]:
    size = max(1, settings.val_batch_size)
    batches = [list(requests[i: i + size]) for i in range(0, len(requests), size)]
    return batches[: settings.val_steps] if settings.val_steps else batches


def split_validation(requests: Sequence[EditRequest], share: float = 0.1) -> tuple[list, list]:
    """Hold out the last ``share`` of the training records when no validation file is given."""
    n_val = max(1, int(len(requests) * share)) if len(requests) > 1 else 0
    if n_val == 0:
        return list(requests), list(requests)
    return list(requests[:-n_val]), list(requests[-n_val:])


def answer_pool(requests: Sequence[EditRequest]) -> list[str]:
    """Every new target and true answer of the training records (sorted, so draws are reproducible)."""
    return sorted({a for r in requests for a in (r.target_new, r.ground_truth) if a})


def with_random_targets(requests: Sequence[EditRequest], answers: Sequence[str]) -> list[EditRequest]:
    """The edits with new targets drawn (torch's RNG, checkpointed) from ``answers``."""
    picks = torch.randint(len(answers), (len(requests),)).tolist()
    return [dataclasses.replace(r, target_new=answers[i]) for r, i in zip(requests, picks)]


def with_unrelated_locality(requests: Sequence[EditRequest], pool: Sequence[EditRequest], count: int) -> list[EditRequest]:
    """Each edit with ``count`` records of ``pool`` from other relations (another prompt template) added to its
    locality inputs, prompt and true answer: the unrelated inputs MEND's paper trains locality on. Chosen by the
    edit's prompt, so an edit meets the same ones at every step and in validation."""
    if not count:
        return list(requests)
    widened = []
    for request in requests:
        others = [o for o in pool if o.ground_truth and o.template != request.template]
        picks = random.Random(zlib.crc32(request.prompt.encode())).sample(others, min(count, len(others)))
        truths = request.locality_ground_truths or ("",) * len(request.locality_prompts)
        widened.append(dataclasses.replace(request, locality_prompts=request.locality_prompts + tuple(o.prompt for o in picks),
                                           locality_ground_truths=truths + tuple(o.ground_truth for o in picks)))
    return widened


def load_sets(settings: TrainedEditorSettings, train, val=None, *, normalise_loc: bool = False):
    """Training and validation EditRequests from files or lists of records (the last tenth of the training
    records when there is no validation set); ``normalise_loc``: see requests.normalise_request."""
    skip = settings.skip_malformed
    train_set = _training_set(train, "training records", skip, normalise_loc)
    if val is not None:
        return train_set, _training_set(val, "validation records", skip, normalise_loc)
    return split_validation(train_set)


def _training_set(source, name: str, skip_malformed: bool, normalise_loc: bool = False) -> list[EditRequest]:
    from .datasets import load_training_records, normalise_training_records

    if isinstance(source, (str, PathLike)):
        return load_training_records(source, skip_malformed=skip_malformed, normalise_loc=normalise_loc)
    records = [source] if isinstance(source, (Mapping, EditRequest)) else list(source)
    return normalise_training_records([(f"{name} #{i}", r) for i, r in enumerate(records)], name,
                                      skip_malformed=skip_malformed, normalise_loc=normalise_loc)
