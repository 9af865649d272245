"""How an ``hf-steered`` or ``vllm-steered`` error reaches a user of lm-eval's command line: as its
message, not a traceback.

lm-eval 0.4.13's ``lm_eval`` command (``lm_eval/__main__.py``: ``HarnessCLI.execute`` calls
the ``run`` subcommand, which calls ``simple_evaluate``) catches no exception. An error raised
while a steered model is built or evaluates therefore ends the process through Python's default
``sys.excepthook``: a 25–35-line traceback through lm-eval's and transformers' frames, and only
its last line says what to fix. For the errors that are the user's to fix (every
:class:`~lape_harness.errors.LapeError`: a bad ``steer=``, a neuron file for another model ...)
that traceback only hides the message.

:func:`plain_errors` wraps the steered models' entry points: a ``LapeError`` leaving them is marked
with the model's name (its ``model_name``),
and an excepthook (installed then, once) prints a marked error that nobody caught the way
``lape-harness`` itself does, ``error: <message>``, with no traceback
(``LAPE_HARNESS_TRACEBACK=1`` shows it). The process still exits with status 1; every other
exception, and a ``LapeError`` a caller catches, behaves exactly as before.

Example:
    >>> @plain_errors
    ... def build():
    ...     raise InputError("steer=-de needs a neuron set: add neurons=...")
    >>> try:
    ...     build()
    ... except InputError as error:
    ...     print(is_marked(error))
    True
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from lape_harness.errors import InputError, LapeError  # noqa: F401 - InputError: the docstring example

_MARK = "_lape_harness_plain"
_previous = sys.__excepthook__


def plain_errors(function: Callable) -> Callable:
    """Decorate a steered model's entry point (a method, or a function): a :class:`LapeError` it
    raises prints plainly if uncaught, naming the model."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LapeError as error:
            if not is_marked(error):
                setattr(error, _MARK, getattr(args[0], "model_name", None) if args else None)
            _install()
            raise

    return wrapper


def is_marked(error: BaseException) -> bool:
    return hasattr(error, _MARK)


def _install() -> None:
    """Put :func:`_excepthook` in front of the current ``sys.excepthook`` (unless it is already there)."""
    global _previous
    if sys.excepthook is not _excepthook:
        _previous = sys.excepthook
        sys.excepthook = _excepthook


def _excepthook(kind, value, traceback) -> None:
    if is_marked(value) and not os.environ.get("LAPE_HARNESS_TRACEBACK"):
        source = f"lm-eval's model {getattr(value, _MARK)}" if isinstance(getattr(value, _MARK), str) else "lape-harness"
        print(f"\nerror: {value}\n(from {source}; LAPE_HARNESS_TRACEBACK=1 shows the traceback)",
              file=sys.stderr, flush=True)
        return
    _previous(kind, value, traceback)
