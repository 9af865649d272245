"""The one exception family users see: a message that names the problem and the fix.

The CLI prints these as one line (``error: ...``) and exits with status 2; library callers
can catch :class:`LapeError`.

Example:
    >>> raise InputError("corpus file de.txt is empty; add text or drop 'de' from --languages")  # doctest: +SKIP
"""


class LapeError(Exception):
    """Base class of every error lape-harness raises on purpose."""


class InputError(LapeError, ValueError):
    """Bad input at an edge: an argument, a file, a corpus, a spec."""


class HookNeverFiredError(LapeError, RuntimeError):
    """A forward hook on a neuron site did not fire (or fired wrongly) in a forward pass: the
    model bypassed its MLP activation modules, so lape-harness can neither profile nor steer it."""
