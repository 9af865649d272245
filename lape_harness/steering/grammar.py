"""Reading the ``steer=`` grammar (see :mod:`lape_harness.steering.plan`) into plan objects, with a
caret under the first bad token.

Example:
    >>> str(parse_text("+2*fr-de")), str(parse_text("auto:-src+2*tgt"))
    ('-de+2*fr', 'auto:-src+2*tgt')
"""

from __future__ import annotations

import math
import re
from typing import NoReturn

from lape_harness.steering.plan import (
    EXAMPLE,
    NO_STEERING,
    PLACEHOLDERS,
    VALUES,
    AutoPlan,
    SteeringPlan,
    SteerSyntaxError,
    Term,
    format_number,
)

_OP_SYMBOL = {"+": "add", "=": "replace", "*": "multiply", "-": "deactivate"}
_EXPONENT = re.compile(r"[eE][+-]?\d+")


def parse_text(spec: str) -> SteeringPlan | AutoPlan:
    """Parse the text of a ``steer=`` value: ``none``, ``auto``, ``auto:<template>`` or a plan
    (files and ``None`` are :func:`lape_harness.steering.parse_steer`'s).

    >>> str(parse_text("-en=-1.5-fr+de"))
    '-en=-1.5-fr+de'
    >>> str(parse_text("+de-en")), str(parse_text("-de=1e3"))
    ('-en+de', '-de=1000')
    """
    text = spec.strip()
    if text.lower() == "none":
        return NO_STEERING
    if text.lower() == "auto":
        return AutoPlan()
    if text.lower().startswith("auto:"):
        return AutoPlan(parse_terms(text, start=5, placeholders=True))
    return parse_terms(text, start=0, placeholders=False)


def parse_terms(text: str, start: int = 0, placeholders: bool = False) -> SteeringPlan:
    """The terms of ``text`` from position ``start`` on (``placeholders``: an auto template's)."""
    scanner = _Scanner(text, start)
    terms = []
    while not scanner.done():
        terms.append(scanner.term(first=not terms, placeholders=placeholders))
    if not terms:
        scanner.fail("the spec has no terms", hint=None)
    plan = SteeringPlan(tuple(terms))
    if placeholders and not any(term.language == "tgt" for term in plan.terms):
        raise SteerSyntaxError(
            f"steer={text!r}: an auto template must use 'tgt' (the task's language), e.g. steer=auto:-src+2*tgt"
        )
    return plan


class _Scanner:
    """Reads terms left to right, remembering positions for error carets."""

    def __init__(self, text: str, position: int):
        self.text = text
        self.position = position

    def done(self) -> bool:
        self._skip_spaces()
        return self.position >= len(self.text)

    def fail(self, problem: str, at: int | None = None, hint: str | None = "") -> NoReturn:
        at = self.position if at is None else at
        lines = [f"malformed steer spec: {problem}", f"  {self.text}", "  " + " " * at + "^"]
        if hint:
            lines.append(hint)
        lines.append(f"valid example: {EXAMPLE}; see docs/steering.md for the grammar")
        raise SteerSyntaxError("\n".join(lines))

    def term(self, first: bool, placeholders: bool) -> Term:
        self._skip_spaces()
        begin = self.position
        symbol = self._peek()
        if symbol in _OP_SYMBOL:
            self.position += 1
            op = _OP_SYMBOL[symbol]
        elif first and (symbol.isalnum() or symbol == "."):
            op = "add"
        else:
            self.fail(f"expected '+', '-', '=' or '*' before a term, found {symbol!r}")
        number_at = self.position
        strength = self._read_number()
        if strength is not None:
            if op == "deactivate":
                self.fail(
                    "'-' deactivates a language and takes no factor",
                    at=number_at,
                    hint=f"to subtract write +-{format_number(strength)}*LANG; "
                         f"to deactivate with a fill write -LANG={format_number(strength)}",
                )
            if self._peek() == "*":
                self.position += 1
        elif op == "multiply":
            self.fail("'*' needs a factor, e.g. *0.5*de (a ← 0.5·a on de's neurons)")
        language_at = self.position
        language = self._word()
        if not language:
            self.fail(f"expected a language code after {self.text[begin:self.position]!r}")
        language = _language_code(language, placeholders, self, language_at)
        value = "mean"
        if self._peek() == ".":
            if op not in ("add", "replace"):
                self.fail("a '.value' suffix only applies to '+' and '=' terms (e.g. +de.diff)")
            self.position += 1
            value_at = self.position
            value = self._word()
            if value not in VALUES:
                self.fail(f"unknown value {value!r}; use .mean, .diff or .p", at=value_at)
        if op == "deactivate" and self._peek() == "=":
            strength = self._fill(language, placeholders)
        return Term(op, language, strength, value)

    def _fill(self, language: str, placeholders: bool) -> float | None:
        """After ``-LANG``: ``=c`` (the fill), or None when ``=`` starts a replace term ``=LANG2``."""
        fill_at = self.position + 1
        word = re.match(r"[A-Za-z_]\w*", self.text[fill_at:])
        if word:
            if _is_language(word.group(), placeholders):
                return None  # -de=fr: deactivate de, then replace with fr
            self.fail(
                f"expected a number after '=' (the fill value, e.g. -{language}=-1.5), found {word.group()!r}",
                at=fill_at,
                hint=f"{word.group()!r} is not a language code either; to deactivate {language} and replace with a "
                     f"language only your neuron file knows, write ={word.group()}-{language}",
            )
        self.position += 1
        fill = self._read_number(signed=True)
        if fill is None:
            self.fail(f"expected a number after '=' (the fill value, e.g. -{language}=-1.5)", at=fill_at)
        return fill

    def _peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def _skip_spaces(self) -> None:
        while self._peek().isspace():
            self.position += 1

    def _word(self) -> str:
        begin = self.position
        while self._peek().isalnum() or self._peek() == "_":
            self.position += 1
        return self.text[begin : self.position]

    def _read_number(self, signed: bool = False) -> float | None:
        begin = self.position
        if self._peek() and self._peek() in "+-" and (signed or self.text[self.position - 1 : self.position] in ("+", "=", "*")):
            self.position += 1
        digits = self.position
        while self._peek().isdigit() or self._peek() == ".":
            self.position += 1
        if self.position == digits:
            self.position = begin
            return None
        exponent = _EXPONENT.match(self.text, self.position)  # 1e3, 2.5E-1 (but +2en is 2·en)
        if exponent:
            self.position = exponent.end()
        written = self.text[begin : self.position]
        try:
            number = float(written)
        except ValueError:
            self.fail(f"{written!r} is not a number", at=begin)
        if not math.isfinite(number):
            self.fail(f"{written} is not a finite number (it overflows to {number}); strengths must be finite",
                      at=begin)
        return number


def _language_code(word: str, placeholders: bool, scanner: _Scanner, at: int) -> str:
    if placeholders:
        if word not in PLACEHOLDERS:
            scanner.fail(f"an auto template names 'src' or 'tgt', not {word!r}", at=at)
        return word
    if word in PLACEHOLDERS:
        scanner.fail(f"{word!r} is only meaningful in an auto template (steer=auto:-src+tgt)", at=at)
    return known_code(word)


def _is_language(word: str, placeholders: bool) -> bool:
    """Whether ``word`` names a language here: ``src``/``tgt`` in an auto template, else a code of
    the language table (:mod:`lape_harness.languages`)."""
    if placeholders:
        return word in PLACEHOLDERS
    from lape_harness.languages import UnknownLanguageError, normalize_code

    try:
        normalize_code(word)
    except UnknownLanguageError:
        return False
    return True


def known_code(word: str) -> str:
    """The ISO code of a known language (``deu_Latn`` → ``de``), else ``word`` as written: a
    language only the neuron file knows, checked against the file later."""
    from lape_harness.languages import UnknownLanguageError, normalize_code

    try:
        return normalize_code(word)
    except UnknownLanguageError:
        return word
