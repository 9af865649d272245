"""F1 for extractive QA (XQuAD), written out: the references ``paper_f1`` and ``squad_f1`` of
``lape_harness.task_support.metrics`` are checked against.

* :func:`reference_paper_f1` follows the language-arithmetics paper's scoring (Gurgurov et al. 2025,
  arXiv 2507.22608) as docs/tasks.md describes it: lower-case, drop ASCII punctuation, split on
  whitespace, keep articles; the overlap is counted on token *sets*, precision and recall divide by
  the token *list* lengths.
* :func:`reference_squad_f1` follows the official SQuAD evaluation script (Rajpurkar et al. 2016,
  ``evaluate-v1.1.py``: ``normalize_answer`` lower-cases, removes ``string.punctuation``, removes the
  articles ``a an the`` and squeezes whitespace; ``f1_score`` counts the multiset overlap with
  ``collections.Counter``), with the empty-answer rule of ``evaluate-v2.0.py``'s ``compute_f1``
  (if either side has no token, F1 is 1 when both have none, else 0).

Both score one prediction against one gold answer; the metrics take the best over the gold answers.

Example:
    >>> reference_paper_f1("the the cat", "the cat"), reference_squad_f1("the the cat", "the cat")
    (0.8, 1.0)
    >>> reference_paper_f1("", ""), reference_squad_f1("The", "cat")
    (1.0, 0.0)
"""

from __future__ import annotations

import re
import string
from collections import Counter


def reference_paper_f1(prediction: str, gold: str) -> float:
    """The paper's F1 written out: set overlap over list lengths, no article removal."""

    def tokens(text):
        text = "".join(c for c in text.lower() if c not in string.punctuation)
        return text.split()

    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    common = len(set(p) & set(g))
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def reference_squad_f1(prediction: str, gold: str) -> float:
    """SQuAD's F1 written out: articles removed, multiset overlap."""

    def tokens(text):
        text = "".join(c for c in text.lower() if c not in string.punctuation)
        text = re.sub(r"\b(a|an|the)\b", " ", text)
        return text.split()

    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)
