"""A warning when a Language Confusion Benchmark task reaches the model in the wrong prompt form.

An lm-eval task cannot see whether ``--apply_chat_template`` is on, so LCB comes in two forms
(:mod:`lape_harness.task_support.lcb_prompt_forms`): ``lape_lcb_*`` (the message, meant to become
the user turn of a chat template) and ``lape_lcb_base_*`` (the benchmark's ``Q: {message}\\nA:``
for base models). The steered models see each request's context and document, so they can tell:

* a ``lape_lcb_*`` context that ends with the bare message: no chat template was applied (a base
  model, or a chat model run without ``--apply_chat_template``);
* a ``lape_lcb_base_*`` context that does not end with ``Q: {message}\\nA:``: a chat template
  wrapped it (``--apply_chat_template`` is on).

Runs on a model lape-harness does not own (``--model hf``) get no warning (docs/tasks.md).

Example:
    >>> from types import SimpleNamespace as Request
    >>> request = Request(task_name="lape_lcb_monolingual_okapi_de", doc={"prompt": "Hallo?"}, args=("Hallo?", {}))
    >>> print(prompt_form_warnings([request], model_has_chat_template=False)["lape_lcb_monolingual_okapi_de"])
    ... # doctest: +ELLIPSIS
    task lape_lcb_monolingual_okapi_de gives the model the bare message...run lape_lcb_base_monolingual_okapi_de...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lape_harness.task_support.lcb_prompt_forms import base_prompt, counterpart, prompt_form

BASE_GROUPS = "lape_lcb_base, lape_lcb_base_monolingual, lape_lcb_base_crosslingual"


def prompt_form_warnings(requests: Iterable[Any], model_has_chat_template: bool | None) -> dict[str, str]:
    """``{task: warning}`` for the LCB tasks among ``requests`` (lm-eval ``Instance``\\ s: ``task_name``,
    ``doc``, ``args``) whose first request has the wrong form; ``model_has_chat_template`` (None:
    unknown) picks the advice."""
    warnings: dict[str, str] = {}
    seen: set[str] = set()
    for request in requests:
        name = getattr(request, "task_name", None)
        if not isinstance(name, str) or name in seen or prompt_form(name) is None:
            continue
        seen.add(name)
        doc, args = getattr(request, "doc", None), getattr(request, "args", None)
        message = doc.get("prompt") if isinstance(doc, dict) else None
        context = args[0] if isinstance(args, tuple) and args else None
        if not isinstance(message, str) or not message or not isinstance(context, str):
            continue
        if prompt_form(name) == "chat" and context.endswith(message):
            warnings[name] = _bare_message(name, model_has_chat_template)
        elif prompt_form(name) == "base" and not context.endswith(base_prompt(message)):
            warnings[name] = (
                f"task {name} gives the model the benchmark's base-model prompt (Q: ...\\nA:) inside a chat "
                f"template (--apply_chat_template is on); the benchmark gave chat models the bare message as "
                f"the user turn: run {counterpart(name)} (group lape_lcb) with --apply_chat_template, or this "
                "task without it")
    return warnings


def _bare_message(name: str, model_has_chat_template: bool | None) -> str:
    head = (f"task {name} gives the model the bare message, with no chat template (the benchmark prompted "
            "chat models through their chat template and base models as 'Q: <message>\\nA:'): ")
    base = f"run {counterpart(name)} (groups {BASE_GROUPS}) for the benchmark's base-model prompt"
    if model_has_chat_template is False:
        return head + "this model has no chat template, so " + base
    if model_has_chat_template:
        return head + "this model has a chat template: add --apply_chat_template, or " + base
    return head + "for a chat model add --apply_chat_template; for a base model " + base
