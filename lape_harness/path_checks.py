"""Checking the output paths a user names before any work starts, so a long run never ends in a
failed write: a file path must not be a folder, a folder path must not be a file, neither may
lie under a file, and the nearest existing folder must be writable.

Each check raises one :class:`~lape_harness.errors.InputError` that names the flag, the
problem and the fix, and creates nothing.

Example:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> check_output_file(os.path.join(folder, "new", "stats.safetensors"), "--out").name
    'stats.safetensors'
    >>> try:
    ...     check_output_file(folder, "--out")
    ... except InputError as error:
    ...     print(str(error).replace(folder, "DIR"))
    --out 'DIR' is a directory; name a file in it, e.g. 'DIR/stats.safetensors'
"""

from __future__ import annotations

import os
from pathlib import Path

from lape_harness.errors import InputError


def check_output_file(path: str | os.PathLike, flag: str, example: str = "stats.safetensors") -> Path:
    """``path`` can be written as a file (atomically: a temporary file beside it, then a rename)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{flag} {str(path)!r} is a directory; name a file in it, e.g. {str(path / example)!r}")
    _check_place(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` is a folder, or can be created as one, to write files in."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {str(path)!r} is a file, not a folder; name a folder (it is created if missing)")
    _check_place(path, flag)
    return path


def _check_place(path: Path, flag: str) -> None:
    existing = next(candidate for candidate in [path.parent, *path.parent.parents, Path(".")] if candidate.exists())
    if not existing.is_dir():
        raise InputError(f"{flag} {str(path)!r} lies under {str(existing)!r}, which is a file, so nothing can be "
                         "written there; choose a path in a folder")
    folder = path if path.is_dir() else existing
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {str(path)!r}: cannot write in {str(folder)!r} (permission denied); "
                         "choose a writable place")
