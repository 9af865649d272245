"""The demo's modes: what each runs (languages, token budgets, neuron sets, forcing settings).

Example:
    >>> MODES["quick"].languages
    ('en', 'de', 'fr', 'es', 'ru', 'zh')
    >>> Strength(2.0, -1.5).plans()["deactivate+activate"]
    'auto:-src=-1.5+2*tgt'
    >>> rate_tag(0.03)
    'top3'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lape_harness.steering.plan import format_number

DEFAULT_MODEL = "lape:gemma-3-270m"
FORCING_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "pl", "sv")


@dataclass(frozen=True)
class Strength:
    """One forcing setting: activate the target with α, deactivate the source with fill ``c``."""

    alpha: float
    fill: float = 0.0

    def plans(self) -> dict[str, str]:
        """The two steered conditions as ``steer=`` specs."""
        fill = "" if self.fill == 0 else f"={format_number(self.fill)}"
        alpha = "" if self.alpha == 1 else f"{format_number(self.alpha)}*"
        return {
            "deactivate+activate": f"auto:-src{fill}+{alpha}tgt",
            "activate": f"auto:+{alpha}tgt",
        }


@dataclass(frozen=True)
class Mode:
    """What one demo mode runs (see :data:`MODES`)."""

    name: str
    languages: tuple[str, ...] | None  # profiled and in the perplexity matrix; None = all with text
    profile_tokens: int | None  # per language; None = all training text
    seq_len: int
    heldout_tokens: int  # per language, for the perplexity matrix
    ppl_rate: float  # the neuron set whose deactivation the perplexity matrix measures
    forcing_languages: tuple[str, ...]
    forcing_prompts: int  # questions per (source, target) pair
    forcing_rates: tuple[float, ...]
    strengths: tuple[Strength, ...]  # the first is the centre of the sweep
    max_gen_toks: int
    top_rates: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05)
    bench_limit: int = 20  # examples per task of the hub benchmarks (flores, xquad, belebele, xnli, lcb)

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def forcing_grid(self) -> list[tuple[float, Strength]]:
        """The forcing settings, one factor at a time: every ratio at the first strength, then
        every other strength at the perplexity set's ratio (or the first ratio if it is not swept).

        >>> MODES["full"].forcing_grid()[:2]
        [(0.01, Strength(alpha=2.0, fill=0.0)), (0.02, Strength(alpha=2.0, fill=0.0))]
        """
        centre = self.ppl_rate if self.ppl_rate in self.forcing_rates else self.forcing_rates[0]
        grid = [(rate, self.strengths[0]) for rate in self.forcing_rates]
        return grid + [(centre, strength) for strength in self.strengths[1:]]


# quick and default force with the setting the --full sweep chose (docs/demo.md): 2 % set, α = 2, c = 0.
MODES: dict[str, Mode] = {
    "quick": Mode(
        name="quick", languages=("en", "de", "fr", "es", "ru", "zh"), profile_tokens=2048, seq_len=256,
        heldout_tokens=256, ppl_rate=0.03, forcing_languages=("en", "de", "fr", "es"), forcing_prompts=2,
        forcing_rates=(0.02,), strengths=(Strength(2.0),), max_gen_toks=24, bench_limit=5,
    ),
    "default": Mode(
        name="default", languages=FORCING_LANGUAGES + ("zh", "ar", "hi", "ja"), profile_tokens=6144, seq_len=512,
        heldout_tokens=512, ppl_rate=0.03, forcing_languages=FORCING_LANGUAGES, forcing_prompts=3,
        forcing_rates=(0.02,), strengths=(Strength(2.0),), max_gen_toks=32,
    ),
    "full": Mode(
        name="full", languages=None, profile_tokens=None, seq_len=512, heldout_tokens=2000, ppl_rate=0.03,
        forcing_languages=FORCING_LANGUAGES, forcing_prompts=6, forcing_rates=(0.01, 0.02, 0.03, 0.04, 0.05),
        strengths=(Strength(2.0), Strength(1.0), Strength(4.0), Strength(2.0, -1.0), Strength(4.0, -1.0)),
        max_gen_toks=32, bench_limit=100,
    ),
}  # fmt: skip


def with_top_rates(mode: Mode, rates: tuple[float, ...] | None) -> Mode:
    """``mode`` with other neuron-set rates: the perplexity set stays where it is among them (else the
    middle one), forcing keeps its rates that are among them (else the perplexity set's).

    >>> with_top_rates(MODES["quick"], (0.01, 0.05)).ppl_rate, with_top_rates(MODES["quick"], (0.01, 0.05)).forcing_rates
    (0.05, (0.05,))
    """
    from dataclasses import replace

    from lape_harness.errors import InputError

    if not rates:
        return mode
    rates = tuple(sorted(set(float(rate) for rate in rates)))
    if not all(0 < rate < 1 for rate in rates):
        raise InputError(f"--top-rates {' '.join(map(str, rates))}: give fractions between 0 and 1, e.g. --top-rates 0.01 0.03")
    ppl = mode.ppl_rate if mode.ppl_rate in rates else rates[len(rates) // 2]
    forcing = tuple(rate for rate in mode.forcing_rates if rate in rates) or (ppl,)
    return replace(mode, top_rates=rates, ppl_rate=ppl, forcing_rates=forcing)


def rate_tag(rate: float) -> str:
    """``0.03`` → ``top3`` (the neuron-set file is ``lape-top3.safetensors``)."""
    return f"top{format_number(rate * 100)}"


