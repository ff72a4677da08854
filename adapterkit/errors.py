"""Errors a user can act on. The CLI prints them without a traceback and exits with ``exit_code``."""
from __future__ import annotations

from typing import Iterable

SHOWN = 5  # names listed in a message before "and N more"


def listed(names: Iterable[str], shown: int = SHOWN) -> str:
    """Sorted names for a message, the first ``shown`` of them and how many more."""
    names = sorted(names)
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more ({len(names)} in all)" if len(names) > shown else "")


class AdapterkitError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class PluginError(AdapterkitError):
    """A plugin could not be loaded, or two plugins conflict."""


class SchemaError(AdapterkitError):
    """A declaration or hyperparameter file does not match its schema."""


class CheckpointError(AdapterkitError):
    """A checkpoint directory is missing, malformed, or contradicts its declaration."""


class UnknownArchitectureError(AdapterkitError):
    """No registered plugin declares the checkpoint's model type."""


class InferenceRefused(UnknownArchitectureError):
    """No plugin declares the model type, and its declaration could not be inferred with confidence."""


class RequestError(AdapterkitError):
    """An edit request is malformed."""


class StatsError(AdapterkitError):
    """Layer statistics are missing, or do not belong to this model."""


class ArchiveError(AdapterkitError):
    """A trained editor archive does not fit this model or these hyperparameters."""


class OutputError(AdapterkitError):
    """An output location cannot be written."""


class StreamError(AdapterkitError):
    """A stream folder is damaged, or belongs to another model or other settings."""


class UnsupportedMethodError(AdapterkitError):
    """A hyperparameter file is for an editing method adapterkit does not have (EasyEdit's multimodal ones, ...)."""


class AdapterkitWarning(UserWarning):
    """Something a user should look at that does not stop the work; the CLI prints it as ``adapterkit: warning:``."""


class UnknownKeyWarning(AdapterkitWarning):
    """A hyperparameter file holds a key that neither the method nor EasyEdit's dataclass for it reads."""
