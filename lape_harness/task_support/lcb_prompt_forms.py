"""The two prompt forms of the Language Confusion Benchmark (LCB) tasks, and which tasks to run.

The benchmark (github.com/for-ai/language-confusion at ``94592802d5dd``) prompted a *base* model
with ``Q: {message}\\nA:`` (``few_shot_prompting.py``, ``turns_to_prompt``, zero-shot) and cuts
every completion at ``\\nQ:`` (``compute_metrics.py``, ``normalize``); a chat model got the
message as the user turn of its chat template. An lm-eval task cannot see whether
``--apply_chat_template`` is on, so each test set is two tasks:

* ``lape_lcb_<setting>_<source>_<lang>`` (``"chat"``): the message as it is, for a chat model run
  with ``--apply_chat_template`` (lm-eval makes it the user turn);
* ``lape_lcb_base_<setting>_<source>_<lang>`` (``"base"``): ``Q: {message}\\nA:``, for a base
  model (no chat template, no ``--apply_chat_template``).

Both score the same way (:mod:`lape_harness.task_support.confusion`) and stop at :data:`STOP`.

Example:
    >>> base_prompt("Reply in Japanese. What is tea?")
    'Q: Reply in Japanese. What is tea?\\nA:'
    >>> lcb_tasks_for(apply_chat_template=False)
    ['lape_lcb_base']
    >>> counterpart("lape_lcb_crosslingual_okapi_ja")
    'lape_lcb_base_crosslingual_okapi_ja'
"""

from __future__ import annotations

from lape_harness.errors import InputError

#: the name prefix (and top group) of each prompt form
PREFIXES = {"chat": "lape_lcb", "base": "lape_lcb_base"}
#: the benchmark's settings (sub-groups ``<prefix>_<setting>``)
SETTINGS = ("monolingual", "crosslingual")
#: where generation stops: where the benchmark's scorer cuts a completion
STOP = "\nQ:"


def base_prompt(message: str) -> str:
    """The benchmark's zero-shot base-model prompt for one message: ``turns_to_prompt([{"role":
    "User", "message": message}])``, the message verbatim (its own spaces and newlines kept).

    >>> base_prompt("Hola, ¿qué tal?")
    'Q: Hola, ¿qué tal?\\nA:'
    """
    return f"Q: {message}\nA:"


def form_prefix(form: str) -> str:
    """The name prefix (and top group) of a prompt form.

    >>> form_prefix("base")
    'lape_lcb_base'
    """
    if form not in PREFIXES:
        raise InputError(f"unknown LCB prompt form {form!r}; use one of {', '.join(PREFIXES)} "
                         "(chat: with --apply_chat_template; base: without)")
    return PREFIXES[form]


def task_name(setting: str, source: str, language: str, form: str = "chat") -> str:
    """The task of one test set in one prompt form.

    >>> task_name("monolingual", "okapi", "de", "base")
    'lape_lcb_base_monolingual_okapi_de'
    """
    return f"{form_prefix(form)}_{setting}_{source}_{language}"


def prompt_form(name: str) -> str | None:
    """``"base"`` or ``"chat"`` for an LCB task or group name, None for any other name.

    >>> prompt_form("lape_lcb_base_crosslingual"), prompt_form("lape_lcb"), prompt_form("lape_xnli_de")
    ('base', 'chat', None)
    """
    if name == PREFIXES["base"] or name.startswith(PREFIXES["base"] + "_"):
        return "base"
    if name == PREFIXES["chat"] or name.startswith(PREFIXES["chat"] + "_"):
        return "chat"
    return None


def counterpart(name: str) -> str:
    """The same LCB task or group in the other prompt form.

    >>> counterpart("lape_lcb_base_monolingual")
    'lape_lcb_monolingual'
    """
    form = prompt_form(name)
    if form is None:
        raise InputError(f"{name!r} is not a Language Confusion Benchmark task or group (lape_lcb_... or "
                         "lape_lcb_base_...)")
    other = "chat" if form == "base" else "base"
    return PREFIXES[other] + name.removeprefix(PREFIXES[form])


def lcb_tasks_for(apply_chat_template: bool, setting: str | None = None) -> list[str]:
    """The LCB group to run: the chat form when the run applies the model's chat template
    (lm-eval's ``apply_chat_template``; a model without a chat template cannot), else the
    benchmark's base-model form; ``setting`` narrows it to ``"monolingual"`` or ``"crosslingual"``.

    >>> lcb_tasks_for(True), lcb_tasks_for(False, "crosslingual")
    (['lape_lcb'], ['lape_lcb_base_crosslingual'])
    """
    prefix = PREFIXES["chat" if apply_chat_template else "base"]
    if setting is None:
        return [prefix]
    if setting not in SETTINGS:
        raise InputError(f"unknown LCB setting {setting!r}; use one of {', '.join(SETTINGS)} (or none: both)")
    return [f"{prefix}_{setting}"]
