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
