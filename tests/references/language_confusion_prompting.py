"""The Language Confusion Benchmark's base-model prompt, ported: the reference the
``lape_lcb_base_*`` tasks and ``lape_harness.task_support.lcb_prompt_forms`` are checked against.

``turns_to_prompt`` of ``few_shot_prompting.py`` of github.com/for-ai/language-confusion (Marchisio
et al. 2024; Apache-2.0) at commit 94592802d5dd33e30af2fe57952254a89ab6f683 (the commit lape-harness
pins for the test sets; unchanged at the repository's head 0cfdbb4a6450), copied as it is. The
module's docstring shows its use for a base model: ``turns_to_prompt(turns + [{'role': 'User',
'message': ...}])``; zero-shot, ``turns`` is empty. ``compute_metrics.py`` cuts each completion at
``'\\nQ:'`` (``normalize``), the benchmark's only stop string.
"""

from __future__ import annotations

#: where the benchmark's scorer cuts a completion: ``text.split('\nQ:')[0]``
STOP = "\nQ:"


def turns_to_prompt(turns: list[dict]) -> str:
    """
    Convert a multi-turn conversation into a single string prompt compatible with a base model, for instance:

    ```
    Q: Hello, how are you?
    A: I'm fine and you?

    Q: How much is 1+1?
    A:
    ```
    """
    prompt = ''
    for turn in turns:
        role = turn['role']
        msg = turn['message']
        if role == 'User':
            prompt += f'Q: {msg}\n'
        elif role == 'Chatbot':
            prompt += f'A: {msg}\n\n'
    if role == 'User':
        prompt += 'A:'
    return prompt.strip('\n')


def zero_shot_prompt(message: str) -> str:
    """The prompt of one test-set message for a base model, zero-shot."""
    return turns_to_prompt([{'role': 'User', 'message': message}])
