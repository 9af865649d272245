"""Plan files: a ``steer=`` plan kept in a ``.yaml``/``.yml``/``.json`` file, read with a strict schema.

A plan file holds exactly one of two keys:

* ``steer: <spec>``: a spec in the grammar of :mod:`lape_harness.steering.plan`
  (``steer: -en=-1.5+2*de.diff``, ``steer: auto``, ``steer: none``);
* ``terms: [<term>, ...]``: a non-empty list whose entries are strings (``"-en=-1.5"``, ``fr``)
  or mappings with the keys ``op`` (add, replace, multiply, deactivate), ``language``,
  ``value`` (mean, diff or p; add/replace only) and the strength, either as ``strength`` or
  under the name the results JSON uses for it (:meth:`~lape_harness.steering.plan.Term.describe`):
  ``alpha`` (add/replace), ``beta`` (multiply, required) or ``fill`` (deactivate).

So a run is replayed from its results: copy ``config.steering.terms`` of the results JSON
into ``terms:`` (and pass its ``steer_scope``). Anything else is an error that names the
allowed keys: an unknown key or a misspelt one (``strenght``), a strength under another op's
name, a strength that is not a finite number (``.nan``, ``.inf``), an empty ``terms: []``
(``steer: none`` runs unsteered on purpose).

Example:
    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "plan.json")
    >>> terms = [{"op": "deactivate", "language": "de", "fill": -1.5}, {"op": "add", "language": "fr", "alpha": 3.0}]
    >>> with open(path, "w") as handle:
    ...     json.dump({"terms": terms}, handle)
    >>> str(read_plan_file(path))
    '-de=-1.5+3*fr'
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any

from lape_harness.steering.grammar import known_code, parse_terms, parse_text
from lape_harness.steering.plan import (
    OPS,
    STRENGTH_NAMES,
    VALUES,
    AutoPlan,
    SteeringPlan,
    SteerSyntaxError,
    Term,
)

SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("steer", "terms")
TERM_KEYS = ("op", "language", "value", "strength", "alpha", "beta", "fill")
_EXAMPLE = (
    "terms:\n  - -en=-1.5\n  - {op: add, language: de, alpha: 2, value: diff}\n"
    "  - {op: deactivate, language: fr, fill: -1.5}"
)


def looks_like_file(text: str) -> bool:
    """Whether a ``steer=`` value names a plan file (by suffix, or an existing path with a separator)."""
    return text.lower().endswith(SUFFIXES) or (os.sep in text and (Path(text).is_file() or Path(text).is_dir()))


def read_plan_file(path: str | os.PathLike) -> SteeringPlan | AutoPlan:
    """Read and check a plan file (see the module docstring); every problem is a
    :class:`~lape_harness.steering.plan.SteerSyntaxError` naming the file."""
    path = Path(path)
    where = repr(str(path))
    if path.is_dir():
        raise SteerSyntaxError(f"steer plan file {where} is a directory; pass a .yaml or .json plan file inside it")
    if not path.is_file():
        raise SteerSyntaxError(f"steer plan file {where} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SteerSyntaxError(f"steer plan file {where} is not UTF-8 text ({error.reason} at byte "
                               f"{error.start}); save it as UTF-8") from None
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(text)
        else:
            import yaml

            content = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - any parser error means the same to the user
        kind = path.suffix[1:].upper() or "YAML"
        raise SteerSyntaxError(f"steer plan file {where} is not valid {kind}: {error}") from None
    return _plan(content, where)


def _plan(content: Any, where: str) -> SteeringPlan | AutoPlan:
    keys = list(content) if isinstance(content, dict) else []
    unknown = [key for key in keys if key not in TOP_KEYS]
    if not isinstance(content, dict) or unknown or len(keys) != 1:
        found = f"it has {', '.join(map(repr, keys))}" if keys else "it has neither"
        raise SteerSyntaxError(
            f"steer plan file {where} must hold exactly one of the keys 'steer' (a spec) or 'terms' (a list); "
            f"{found}{_did_you_mean(unknown, TOP_KEYS)}. E.g.\n{_EXAMPLE}\n"
            "(to replay a run, copy config.steering.terms of its results JSON into 'terms:' and pass its steer_scope)"
        )
    if "steer" in content:
        if not isinstance(content["steer"], str) or not content["steer"].strip():
            raise SteerSyntaxError(f"{where}: 'steer' must be a spec such as '-de+fr' (or 'none'), "
                                   f"not {content['steer']!r}")
        return parse_text(content["steer"])
    entries = content["terms"]
    if not isinstance(entries, list) or not entries:
        raise SteerSyntaxError(
            f"{where}: 'terms' is {entries!r}, but a plan needs at least one term (an empty plan steers nothing); "
            "list terms such as '- -de', or write 'steer: none' to run unsteered on purpose"
        )
    terms: list[Term] = []
    for entry in entries:
        if isinstance(entry, str):
            terms.extend(parse_terms(entry if entry[:1] in "+=*-" else "+" + entry).terms)
        elif isinstance(entry, dict):
            terms.append(term_from_mapping(entry, where))
        else:
            raise SteerSyntaxError(f"{where}: term {entry!r} must be a string like '-de' or a mapping like "
                                   "{op: add, language: de, alpha: 2}")
    return SteeringPlan(tuple(terms))


def term_from_mapping(entry: dict[str, Any], where: str = "plan") -> Term:
    """One term from its mapping form (``{op, language, [value], [strength | alpha | beta | fill]}``).

    >>> str(term_from_mapping({"op": "multiply", "language": "de", "beta": 0.5}))
    '*0.5*de'
    """
    unknown = [str(key) for key in entry if key not in TERM_KEYS]
    if unknown:
        raise SteerSyntaxError(
            f"{where}: term {entry!r} has unknown key(s) {', '.join(map(repr, unknown))}"
            f"{_did_you_mean(unknown, TERM_KEYS)}; a term's keys are op, language, value (add/replace: mean, diff "
            "or p) and its strength as 'strength' or by name: alpha (add/replace), beta (multiply), fill (deactivate)"
        )
    op = entry.get("op")
    if op not in OPS or "language" not in entry:
        raise SteerSyntaxError(f"{where}: term {entry!r} needs 'op' (one of {', '.join(OPS)}) and 'language'")
    language = entry["language"]
    if isinstance(language, bool):  # YAML reads a bare `no` (Norwegian) as false
        raise SteerSyntaxError(f"{where}: term {entry!r}: YAML read the language as {language}; quote it, "
                               "e.g. language: 'no'")
    if not isinstance(language, str) or not language.strip():
        raise SteerSyntaxError(f"{where}: term {entry!r}: 'language' must be a language code such as 'de'")
    value = entry.get("value", "mean")
    if value not in VALUES or (value != "mean" and op not in ("add", "replace")):
        raise SteerSyntaxError(f"{where}: term {entry!r}: 'value' is one of {', '.join(VALUES)}, for add/replace only")
    return Term(op, known_code(language.strip()), _strength(entry, op, where), value)


def _strength(entry: dict[str, Any], op: str, where: str) -> float | None:
    own = STRENGTH_NAMES[op]
    given = [key for key in ("strength", "alpha", "beta", "fill") if key in entry]
    if len(given) > 1:
        raise SteerSyntaxError(f"{where}: term {entry!r} gives its strength twice ({', '.join(given)}); keep one")
    if given and given[0] not in ("strength", own):
        raise SteerSyntaxError(
            f"{where}: term {entry!r}: '{given[0]}' is the strength of another op; the strength of a {op} "
            f"term is '{own}' (or 'strength')"
        )
    if not given:
        if op == "multiply":
            raise SteerSyntaxError(f"{where}: multiply term {entry!r} needs its factor: 'beta' (or 'strength')")
        return None  # the op's default: fill 0, else 1
    raw = entry[given[0]]
    try:
        if isinstance(raw, bool):
            raise TypeError
        strength = float(raw)
    except (TypeError, ValueError):
        raise SteerSyntaxError(f"{where}: term {entry!r}: '{given[0]}' must be a number") from None
    if not math.isfinite(strength):
        raise SteerSyntaxError(f"{where}: term {entry!r}: '{given[0]}' is {raw!r}; a strength must be a finite number")
    return strength


def _did_you_mean(unknown: list[str], allowed: tuple[str, ...]) -> str:
    guesses = [f"{word!r} → {match[0]!r}" for word in unknown
               if (match := difflib.get_close_matches(str(word), allowed, n=1, cutoff=0.6))]  # fmt: skip
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""
