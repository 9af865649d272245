"""The plain `lm_eval` CLI runs `hf-steered` (and still `hf`), in one process and data-parallel in two.

Two CPU processes on the gloo backend: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2 -m lm_eval ...``. The two-process run must split the requests between the ranks
and give the same per-sample answers and metrics as one process, with steering active.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DOCS = [
    {"q": "Die Katze sitzt auf der", "choices": [" Matte", " Leben", " Person"], "gold": 0},
    {"q": "Le chat est assis sur le", "choices": [" tapis", " droit", " chaud"], "gold": 0},
    {"q": "The cat sits on the warm", "choices": [" mat", " life", " right"], "gold": 0},
    {"q": "Jeder hat das Recht auf", "choices": [" Leben", " Katze", " Matte"], "gold": 0},
    {"q": "Tout individu a droit à la", "choices": [" vie", " chat", " tapis"], "gold": 0},
    {"q": "Everyone has the right to", "choices": [" life", " cat", " mat"], "gold": 0},
    {"q": "El gato está sentado en la", "choices": [" alfombra", " vida", " persona"], "gold": 0},
]
TASKS = {
    "mp_choice": """
output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "mp_generate": """
output_type: generate_until
doc_to_target: "{{choices[gold]}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 6, do_sample: false}
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two local tasks over the same documents."""
    root = tmp_path_factory.mktemp("mp")
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS), encoding="utf-8")
    for name, body in TASKS.items():
        (root / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\ndoc_to_text: \"{{{{q}}}}\"\n{body}", encoding="utf-8")
    return root


def lm_eval(workdir: Path, model: str, model_args: str, name: str, processes: int = 1) -> dict:
    """Run the plain CLI (one process, or ``processes`` CPU processes) and return results + samples."""
    out = workdir / name
    args = ["--model", model, "--model_args", model_args,
            "--tasks", ",".join(str(workdir / f"{task}.yaml") for task in TASKS),
            "--batch_size", "2", "--output_path", str(out), "--log_samples"]
    if processes == 1:
        command = [str(BIN / "lm_eval"), *args, "--device", "cpu"]
    else:
        command = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "lm_eval", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = glob.glob(str(out / "*" / "results_*.json"))
    samples = {}
    for task in TASKS:
        (samples_file,) = glob.glob(str(out / "*" / f"samples_{task}_*.jsonl"))
        rows = [json.loads(line) for line in Path(samples_file).read_text(encoding="utf-8").splitlines()]
        samples[task] = {row["doc_id"]: row["filtered_resps"] for row in rows}
    ranks = set(re.findall(r"Building contexts for \w+ on rank (\d+)", result.stderr))
    return {"results": json.loads(Path(results_file).read_text())["results"], "samples": samples, "ranks": ranks}


def assert_same_metrics(left: dict, right: dict) -> None:
    """Equal metrics; stderr values may differ in the last bit (the gathered samples are summed in another order)."""
    assert left["results"].keys() == right["results"].keys() == set(TASKS)
    for task, values in left["results"].items():
        other = right["results"][task]
        assert values.keys() == other.keys()
        for key, value in values.items():
            if isinstance(value, float) and "stderr" in key:
                assert math.isclose(value, other[key], rel_tol=1e-9), (task, key)
            else:
                assert value == other[key], (task, key)


def assert_same_answers(left: dict, right: dict) -> None:
    for task in TASKS:
        assert left["samples"][task].keys() == right["samples"][task].keys() == set(range(len(DOCS)))
        for doc_id, answer in left["samples"][task].items():
            other = right["samples"][task][doc_id]
            if task == "mp_choice":  # [[loglikelihood, is_greedy], ...] per choice
                for (a, greedy_a), (b, greedy_b) in zip(answer, other, strict=True):
                    assert math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-5) and greedy_a == greedy_b
            else:
                assert answer == other


@pytest.mark.timeout(600)
def test_cli_runs_hf_steered_in_one_and_in_two_processes_with_the_same_metrics(workdir, tiny_llama, neuron_file):
    model = f"pretrained={tiny_llama},dtype=float32"
    plan = f"{model},neurons={neuron_file(tiny_llama)},steer=-fr+de"

    plain = lm_eval(workdir, "hf", model, "hf")
    steered = lm_eval(workdir, "hf-steered", plan, "one")
    parallel = lm_eval(workdir, "hf-steered", plan, "two", processes=2)

    assert steered["samples"] != plain["samples"], "steering changed nothing: the plan was not applied"
    assert (steered["ranks"], parallel["ranks"]) == ({"0"}, {"0", "1"}), "the two processes did not split the work"
    assert_same_answers(steered, parallel)
    assert_same_metrics(steered, parallel)
