"""A sweep of N plans (`lape-harness sweep`, one model load) against N separate `lm_eval run`
processes of the same plans, on the same model, task and limit.

Both sides run as fresh processes, side by side in one run: the sweep is one process; the
separate runs are N `lm_eval run --model hf-steered --model_args ...,steer=PLAN` processes.
A third measurement times one model load (building `HFSteeredLM`) alone. The same comparison on
vLLM (`sweep --engine vllm` against `--model vllm-steered` runs) is a row of `bench_vllm`. The task is a
rolling-log-likelihood task over a few local sentences (no network), so that the
comparison isolates the per-run overhead. The model is Gemma-3-270m (`lape:gemma-3-270m`)
when its package is installed, else the tiny test model; the neuron set holds a fixed
random 1% of the neurons per language (timing does not depend on which neurons).

Target: the sweep saves at least the N−1 extra model loads, i.e.
``t_separate − t_sweep ≥ (N − 1) · t_load``. The row also checks that both ways give the
same perplexities.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLANS = ["none", "-de", "+de", "-en", "-en+de"]
QUICK_PLANS = PLANS[:3]
SENTENCES = [
    "Die Katze sitzt auf der warmen Matte und schläft.",
    "Jeder Mensch hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
    "Am Wochenende fahren wir mit dem Zug in die Berge.",
    "Das Wetter ist heute schön, aber morgen soll es regnen.",
]
TASK = "bench_sweep_ppl_de"


def _model(tmp: Path) -> tuple[str, str]:
    """(pretrained=..., label): Gemma-3-270m when installed, else the tiny test model."""
    from lape_harness.embedded import resolve_pretrained
    from lape_harness.errors import LapeError

    try:
        resolve_pretrained("lape:gemma-3-270m")
        return "lape:gemma-3-270m", "gemma-3-270m"
    except (LapeError, ImportError, OSError):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from builders import build_tiny_model

        return str(build_tiny_model(tmp / "tiny", arch="llama")), "tiny-llama"


def _neuron_set(pretrained: str, path: Path) -> None:
    """A fixed random 1% of the neurons for de and en, shaped like the model."""
    import torch
    from transformers import AutoConfig

    from lape_harness.embedded import resolve_pretrained
    from lape_harness.neurons import LanguageNeurons, NeuronSet

    config = AutoConfig.from_pretrained(resolve_pretrained(pretrained))
    config = getattr(config, "text_config", config)
    layers, width = config.num_hidden_layers, config.intermediate_size
    generator = torch.Generator().manual_seed(0)
    neurons = {}
    for code in ("de", "en"):
        flat = torch.randperm(layers * width, generator=generator)[: max(1, layers * width // 100)].sort().values
        n = len(flat)
        neurons[code] = LanguageNeurons(flat // width, flat % width, torch.rand(n, generator=generator),
                                        torch.zeros(n), torch.full((n,), 0.5))
    NeuronSet(["de", "en"], layers, width, neurons, {"model": {"model_id": pretrained}}).save(path)


def _task(folder: Path) -> None:
    data = folder / "de.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n",
        encoding="utf-8",
    )


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")
    return elapsed


def _perplexity(folder: Path) -> float:
    path = sorted(folder.rglob("results_*.json"))[-1]
    return json.loads(path.read_text())["results"][TASK]["word_perplexity,none"]


#: --engine -> (the lm-eval model, its class in lape-harness, its model arguments, command-line options)
ENGINES = {"hf": ("hf-steered", "lape_harness.plugin.hf_steered.HFSteeredLM", "dtype=float32", ["--device", "cpu"]),
           "vllm": ("vllm-steered", "lape_harness.plugin.vllm_steered.VLLMSteeredLM", "dtype=float32,max_model_len=1024", [])}


def sweep_vs_separate(engine: str, plans: list[str]) -> dict:
    """The row for ``engine`` (``hf`` or ``vllm``): one sweep of ``plans`` against one run per plan."""
    model, model_class, engine_args, options = ENGINES[engine]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pretrained, label = _model(tmp)
        neurons = tmp / "lape-top1.safetensors"
        _neuron_set(pretrained, neurons)
        _task(tmp)
        model_args = f"pretrained={pretrained},neurons={neurons},{engine_args}"
        common = ["--limit", str(len(SENTENCES)), *options]
        t_sweep = _timed([sys.executable, "-m", "lape_harness", "sweep", "--engine", engine, "--model-args", model_args,
                          f"--plans={','.join(plans)}", "--tasks", TASK, "--include-path", str(tmp),
                          "--output", str(tmp / "sweep"), *common])
        lm_eval = [sys.executable, "-m", "lm_eval", "run", "--model", model, "--tasks", TASK,
                   "--include_path", str(tmp), *common]
        t_separate = 0.0
        for position, plan in enumerate(plans):
            t_separate += _timed([*lm_eval, "--model_args", f"{model_args},steer={plan}",
                                  "--output_path", str(tmp / "separate" / str(position))])
        module, name = model_class.rsplit(".", 1)
        load = (f"import sys, time; from {module} import {name}\n"
                "if __name__ == '__main__':\n"
                f"    t = time.perf_counter(); {name}.create_from_arg_string({model_args!r}, {{'device': 'cpu'}}); "
                "print(time.perf_counter() - t)")
        t_load = float(subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, check=True)
                       .stdout.strip().splitlines()[-1])
        sweep_ppl = [_perplexity(tmp / "sweep" / _folder(plan)) for plan in plans]
        separate_ppl = [_perplexity(tmp / "separate" / str(i)) for i in range(len(plans))]
    same = all(abs(a - b) <= 1e-6 * max(abs(b), 1.0) for a, b in zip(sweep_ppl, separate_ppl))
    saved = t_separate - t_sweep
    n = len(plans)
    return {
        "benchmark": f"{model}: sweep of {n} plans vs {n} separate lm_eval runs",
        "model": label,
        "value": round(t_separate / t_sweep, 2),
        "unit": "ratio",
        "target": f"saves ≥ (N−1)·load = {(n - 1) * t_load:.1f} s",
        "passed": bool(saved >= (n - 1) * t_load and same),
        "details": (f"separate {t_separate:.1f} s, sweep {t_sweep:.1f} s, saved {saved:.1f} s; one model load "
                    f"{t_load:.1f} s; same perplexities both ways: {same}"),
    }


def run(quick: bool) -> list[dict]:
    return [sweep_vs_separate("hf", QUICK_PLANS if quick else PLANS)]


def _folder(plan: str) -> str:
    from lape_harness.studies.sweep import PlanEntry

    return PlanEntry(plan).folder


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
