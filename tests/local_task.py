"""A local multiple-choice lm-eval task over a few texts, written into a test's folder (no network).

Example:
    >>> manager = choice_task(tmp_path, "lape_steer_probe", ["The cat sits on the"])   # doctest: +SKIP
    >>> simple_evaluate(model=lm, tasks=["lape_steer_probe"], task_manager=manager)    # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path


def choice_task(folder: Path, name: str, texts: list[str], metadata: dict | None = None):
    """Write task ``name`` (choices ' mat', ' Matte', ' tapis'; gold 0) over ``texts`` into
    ``folder`` (with ``metadata`` in its YAML when given) and return a ``TaskManager`` that knows only it."""
    import yaml
    from lm_eval.tasks import TaskManager

    docs = folder / f"{name}.jsonl"
    docs.write_text("\n".join(json.dumps({"text": text, "gold": 0}) for text in texts) + "\n")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {docs}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{{{text}}}}'\n"
        "doc_to_choice: [' mat', ' Matte', ' tapis']\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n"
        + (yaml.safe_dump({"metadata": metadata}) if metadata else "")
    )
    return TaskManager(include_path=str(folder), include_defaults=False)
