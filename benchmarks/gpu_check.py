"""The GPU check: profiling and steering on a random-initialised Llama of 8B shape, in one run.

Anyone with one CUDA GPU runs it in a few minutes, with no hub access (the model and a byte-level
tokenizer are built here):

    python -m benchmarks.gpu_check                      # 8B shape in bf16 (fewer layers if it does not fit)
    python -m benchmarks.gpu_check --out gpu_check.json # also write the summary to a file
    python -m benchmarks.gpu_check --device cpu --small # the same code path on a tiny shape (a smoke test)

It prints one JSON summary with these checks (each with its value, target and ``passed``):

* ``profile_memory``: peak GPU memory of ``profile_model`` at batch 8 × 4,096 tokens, minus the
  weights (target ≤ 2 GB), next to the same for a hook-less forward of the decoder body;
* ``profile_throughput``: profiling tokens/s over hook-less forward tokens/s (target ≥ 0.9);
* ``steering_bf16_vs_fp32``: the steered logits of a bf16 model against an fp32 copy of it on a
  few positions, as a multiple of the unsteered bf16-vs-fp32 difference (target ≤ 1.5: steering in
  bf16 adds no error of its own), on a 4-layer model of the same width;
* ``no_host_sync_in_hooks``: the profiling and steering hooks (all positions, ``steer_bos=false``,
  ``steer_scope=generated``) under ``torch.cuda.set_sync_debug_mode("error")``;
* ``decode_step_time``: a greedy decode step with steering over one without (target ≤ 1.03), batch 1;
* ``two_device_split``: with two or more GPUs, the model split over two of them by ``device_map``
  gives the same counts and steered logits as on one.

Without CUDA it exits with a message (status 2) unless ``--device cpu``. The exit status is 1
when a GPU target is missed. With ``--small`` nothing is compared with a target.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
import warnings
from typing import Any

import torch

SHAPE_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256)
SHAPE_SMALL = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512)
SIZES = {
    "full": dict(batch=8, seq_len=4096, batches=3, prompt=128, new_tokens=32, repeats=5, compare_layers=4),
    "small": dict(batch=2, seq_len=32, batches=1, prompt=8, new_tokens=4, repeats=1, compare_layers=2),
}
PLAN = "-de+2*fr"  # deactivate one language's neurons, add twice another's mean: every kernel kind
NEURON_RATE = 0.01  # neurons per language and layer, as a LAPE top-1% set


class ByteTokenizer:
    """Bytes → token ids 3..258, with the start token 1 before a text (as Llama's tokenizer adds BOS)."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens: bool = True, verbose: bool = False):
        encode = lambda one: ([1] if add_special_tokens else []) + [3 + byte for byte in one.encode()]  # noqa: E731
        return {"input_ids": encode(text) if isinstance(text, str) else [encode(one) for one in text]}


class RandomText:
    """A text source of random words (``lape_harness.corpora.TextSource``'s interface)."""

    language, source = "de", "random words"

    def documents(self):
        generator = random.Random(0)
        letters = "abcdefghijklmnopqrstuvwxyzäöüß"
        while True:
            yield " ".join("".join(generator.choices(letters, k=generator.randint(2, 9))) for _ in range(200))

    def fingerprint(self) -> str:
        return "random-words-seed-0"


def build_model(shape: dict, layers: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lape_harness.hf_loading import from_config

    config = LlamaConfig(**{**shape, "num_hidden_layers": layers}, max_position_embeddings=8192,
                         tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):
        model = from_config(AutoModelForCausalLM, config, dtype=dtype)
    return model.eval()


def neuron_set(layers: int, width: int, seed: int = 0):
    from lape_harness.neurons import LanguageNeurons, NeuronSet

    generator = torch.Generator().manual_seed(seed)
    per_layer = max(2, int(width * NEURON_RATE))
    entries = {}
    for language in ("de", "fr"):
        index = torch.cat([torch.randperm(width, generator=generator)[:per_layer].sort().values for _ in range(layers)])
        layer = torch.arange(layers).repeat_interleave(per_layer)
        mean = torch.randn(len(index), generator=generator) * 0.5
        entries[language] = LanguageNeurons(layer, index, mean, torch.zeros_like(mean), torch.rand(len(index)))
    return NeuronSet(["de", "fr"], layers, width, entries, {"model": {"model_id": "random"}})


def layers_that_fit(device: torch.device, shape: dict, sizes: dict) -> int:
    """All layers of the shape, or as many as fit with room for the embeddings and activations."""
    if device.type != "cuda":
        return shape["num_hidden_layers"]
    hidden, inner, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = hidden * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = 2 * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inner)  # bf16 bytes
    activations = 2 * sizes["batch"] * sizes["seq_len"] * (4 * inner + 8 * hidden)
    free = torch.cuda.mem_get_info(device)[0] - 2 * 2 * vocab * hidden - activations - (2 << 30)
    return max(1, min(shape["num_hidden_layers"], free // per_layer))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check(value, target: str, passed: bool | None, **details) -> dict[str, Any]:
    return {"value": value, "target": target, "passed": passed, **details}


def profile_memory_and_throughput(model, device, sizes, gpu: bool) -> tuple[dict, dict]:
    from lape_harness.profile import profile_model

    batch, seq_len, batches = sizes["batch"], sizes["seq_len"], sizes["batches"]
    body = model.base_model
    ids = torch.randint(3, 259, (batch, seq_len), device=device)
    run = lambda count: profile_model(model, ByteTokenizer(), {"de": RandomText()}, seq_len=seq_len,  # noqa: E731
                                      batch_size=batch, max_tokens=count * batch * (seq_len - 1), progress=False)
    with torch.inference_mode():
        body(input_ids=ids, use_cache=False)  # warm-up
        run(1)
        synchronize(device)
        weights = torch.cuda.memory_allocated(device) if gpu else None
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for _ in range(batches):
            body(input_ids=ids, use_cache=False)
        synchronize(device)
        plain_seconds = time.perf_counter() - started
        plain_peak = torch.cuda.max_memory_allocated(device) - weights if gpu else None
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        stats = run(batches)
        synchronize(device)
        profile_seconds = time.perf_counter() - started
        profile_peak = torch.cuda.max_memory_allocated(device) - weights if gpu else None
    ratio = plain_seconds / profile_seconds  # = profiling tokens/s over forward tokens/s (same token count)
    gib = lambda n: None if n is None else round(n / 2**30, 3)  # noqa: E731
    memory = check(gib(profile_peak), "≤ 2 GB over the weights" if gpu else "(GPU only)",
                   (profile_peak <= 2 * 2**30) if gpu else None, unit="GB",
                   weights_gb=gib(weights), hookless_forward_over_weights_gb=gib(plain_peak),
                   profiling_over_hookless_gb=gib(None if not gpu else profile_peak - plain_peak),
                   shape=f"batch {batch} × {seq_len} tokens")
    throughput = check(round(ratio, 3), "≥ 0.9" if gpu else "(GPU only)", (ratio >= 0.9) if gpu else None,
                       unit="ratio", tokens=int(stats.tokens.sum()), profile_seconds=round(profile_seconds, 3),
                       hookless_seconds=round(plain_seconds, 3))
    return memory, throughput


def steering_bf16_vs_fp32(shape, device, sizes, gpu: bool) -> dict:
    from lape_harness.steering import SteeringHooks, parse_steer

    layers = sizes["compare_layers"]
    reference = build_model(shape, layers, torch.float32, device, seed=1)
    half = copy.deepcopy(reference).to(torch.bfloat16)
    neurons = neuron_set(layers, shape["intermediate_size"], seed=1)
    ids = torch.randint(3, 259, (2, min(256, sizes["seq_len"])), device=device)
    logits = {}
    for name, model in (("fp32", reference), ("bf16", half)):
        hooks = SteeringHooks(model, neurons)
        with torch.inference_mode():
            logits[name, "plain"] = model(ids).logits[:, -8:].float()
            hooks.use(parse_steer(PLAN))
            with hooks.active():
                logits[name, "steered"] = model(ids).logits[:, -8:].float()
        hooks.remove()
    plain_error = (logits["bf16", "plain"] - logits["fp32", "plain"]).norm() / logits["fp32", "plain"].norm()
    steered_error = (logits["bf16", "steered"] - logits["fp32", "steered"]).norm() / logits["fp32", "steered"].norm()
    effect = (logits["fp32", "steered"] - logits["fp32", "plain"]).norm() / logits["fp32", "plain"].norm()
    ratio = float(steered_error / plain_error)
    del reference, half
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return check(round(ratio, 3), "≤ 1.5" if gpu else "(GPU only)", (ratio <= 1.5) if gpu else None, unit="ratio",
                 steered_relative_error=round(float(steered_error), 5),
                 unsteered_relative_error=round(float(plain_error), 5), steering_effect=round(float(effect), 4),
                 argmax_agreement=float((logits["bf16", "steered"].argmax(-1) == logits["fp32", "steered"].argmax(-1))
                                        .float().mean()),
                 positions="last 8 of 2 rows", layers=layers)


def no_host_sync(model, device, sizes, neurons) -> dict:
    """Profiling and steering forward passes under ``set_sync_debug_mode("error")``: a host
    synchronisation raises; its innermost lape_harness frame is reported."""
    import traceback

    from lape_harness.profile import NeuronRecorder, Tally
    from lape_harness.sites import find_sites
    from lape_harness.steering import SteeringHooks, parse_steer

    cuda = device.type == "cuda"
    sites = find_sites(model)
    length = min(512, sizes["seq_len"])
    ids = torch.randint(3, 259, (sizes["batch"], length), device=device)
    ids[:, 0] = 1  # a start token, for steer_bos=false
    tally = Tally.empty(sites)

    def profiling():
        with NeuronRecorder(sites) as recorder:
            recorder.expect(1, [length] * sizes["batch"], length)
            model.base_model(input_ids=ids, use_cache=False)
            recorder.commit(tally)

    def steering(scope, start_tokens, generating):
        hooks = SteeringHooks(model, neurons, scope=scope, start_tokens=start_tokens)
        hooks.use(parse_steer(PLAN))  # compiling and placing the plan copies to the GPU: not inside the hooks

        def run():
            with hooks.active(generating=generating):
                model(input_ids=ids, use_cache=False)
        return run, hooks.remove

    cases = {}
    with torch.inference_mode():
        for name, prepare in (
            ("hookless_forward", lambda: (lambda: model(input_ids=ids, use_cache=False), lambda: None)),
            ("profile", lambda: (profiling, lambda: None)),
            ("steer_all", lambda: steering("all", (), False)),
            ("steer_bos_false", lambda: steering("all", (1,), False)),
            ("steer_generated_prefill", lambda: steering("generated", (), True)),
        ):
            run, cleanup = prepare()
            try:
                run()  # warm-up outside the debug mode (first calls may allocate or copy)
                if not cuda:  # the same calls, unchecked: set_sync_debug_mode needs CUDA
                    cases[name] = "ran; not checked (set_sync_debug_mode needs CUDA)"
                    continue
                torch.cuda.synchronize(device)
                torch.cuda.set_sync_debug_mode("error")
                try:
                    run()
                    cases[name] = "no sync"
                except RuntimeError as error:
                    frames = [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_tb(error.__traceback__)]
                    ours = [frame for frame in frames if "lape_harness" in frame]
                    cases[name] = f"sync at {ours[-1]}" if ours else _syncs_outside_us(run, frames[-1])
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            finally:
                cleanup()
    if not cuda:
        return check(None, "(CUDA only)", None, cases=cases)
    ours = [name for name, result in cases.items() if result != "no sync" and "not lape-harness" not in result]
    return check(not ours, "no host sync in lape-harness hooks", not ours, cases=cases)


def _syncs_outside_us(run, first: str) -> str:
    """The model itself synchronized (at ``first``), which stopped the "error" run before the hooks
    were all seen: rerun in "warn" mode and report every synchronizing call site."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sites = sorted({f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()})
    ours = [site for site in sites if "lape_harness" in site]
    if ours:
        return f"sync at {ours[0]} (and {len(sites) - 1} other call sites)"
    return f"no sync in lape-harness code; the model synchronizes at {', '.join(sites) or first} (not lape-harness code)"


def decode_step_time(model, device, sizes, neurons, gpu: bool) -> dict:
    from lape_harness.steering import SteeringHooks, parse_steer

    prompt = torch.randint(3, 259, (1, sizes["prompt"]), device=device)
    hooks = SteeringHooks(model, neurons)
    hooks.use(parse_steer(PLAN))

    def generate(new_tokens: int, steered: bool) -> float:
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            if steered:
                with hooks.active(generating=True):
                    model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)
            else:
                model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
        synchronize(device)
        return time.perf_counter() - started

    steps = sizes["new_tokens"]
    per_step: dict[bool, list[float]] = {False: [], True: []}
    generate(steps, False), generate(steps, True)  # warm-up
    for _ in range(sizes["repeats"]):
        for steered in (False, True):  # interleaved
            per_step[steered].append((generate(steps + 1, steered) - generate(1, steered)) / steps)
    hooks.remove()
    plain, steered = statistics.median(per_step[False]), statistics.median(per_step[True])
    ratio = steered / plain
    return check(round(ratio, 4), "≤ 1.03" if gpu else "(GPU only)", (ratio <= 1.03) if gpu else None, unit="ratio",
                 plain_ms=round(plain * 1e3, 3), steered_ms=round(steered * 1e3, 3),
                 setting=f"batch 1, prompt {sizes['prompt']}, {steps} new tokens, median of {sizes['repeats']}")


def two_device_split(model, device, sizes, neurons) -> dict:
    from accelerate import dispatch_model

    from lape_harness.profile import NeuronRecorder, Tally
    from lape_harness.sites import find_sites
    from lape_harness.steering import SteeringHooks, parse_steer

    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        first, second = 0, 1
    elif device.type == "cpu":  # the smoke test: the same code path with both halves on the CPU
        first, second = "cpu", "cpu"
    else:
        return check(None, "(two GPUs)", None, skipped="fewer than two CUDA devices")
    length = min(256, sizes["seq_len"])
    ids = torch.randint(3, 259, (2, length), device=device)

    def measure(current):
        sites = find_sites(current)
        tally = Tally.empty(sites)
        hooks = SteeringHooks(current, neurons)
        hooks.use(parse_steer(PLAN))
        with torch.inference_mode():
            with NeuronRecorder(sites) as recorder:
                recorder.expect(0, [length, length], length)
                current.base_model(input_ids=ids, use_cache=False)
                recorder.commit(tally)
            with hooks.active():
                logits = current(ids).logits[:, -8:].float().cpu()
        hooks.remove()
        return tally.cpu()[0], logits

    counts, logits = measure(model)
    layers = model.config.num_hidden_layers
    device_map = {"model.embed_tokens": first, "model.rotary_emb": first, "model.norm": second, "lm_head": second,
                  **{f"model.layers.{i}": first if i < layers // 2 else second for i in range(layers)}}
    split = dispatch_model(model, device_map=device_map)
    split_counts, split_logits = measure(split)
    equal_counts = bool(torch.equal(counts, split_counts))
    difference = float((logits - split_logits).abs().max())
    same = equal_counts and difference < 1e-2
    if first == "cpu":
        return check(None, "(two GPUs)", None, ran="cpu + cpu (code path only)", counts_equal=equal_counts,
                     max_logit_difference=difference)
    return check(same, "same counts, same steered logits", same, counts_equal=equal_counts,
                 max_logit_difference=difference, devices=[torch.cuda.get_device_name(i) for i in (0, 1)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --small: a smoke test)")
    parser.add_argument("--small", action="store_true", help="a tiny shape and sizes: the same code path in seconds")
    parser.add_argument("--out", default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: PyTorch sees no CUDA device, so there is nothing to check here; run it on a machine with "
              "a GPU, or `python -m benchmarks.gpu_check --device cpu --small` for a smoke test", file=sys.stderr)
        raise SystemExit(2)
    gpu = device.type == "cuda" and not args.small
    shape, sizes = (SHAPE_SMALL, SIZES["small"]) if args.small else (SHAPE_8B, SIZES["full"])
    warnings.filterwarnings("ignore", message=".*generation flags.*")
    torch.manual_seed(0)
    started = time.perf_counter()
    summary: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                               "torch": torch.__version__, "small": args.small}
    summary["checks"] = {"steering_bf16_vs_fp32": steering_bf16_vs_fp32(shape, device, sizes, gpu)}
    layers = layers_that_fit(device, shape, sizes)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(shape, layers, dtype, device)
    summary["model"] = {"shape": "Llama-3.1-8B" if shape is SHAPE_8B else "tiny", "layers": layers,
                        "dtype": str(dtype).replace("torch.", ""), **{k: v for k, v in shape.items() if k != "num_hidden_layers"}}
    neurons = neuron_set(layers, shape["intermediate_size"])
    checks = summary["checks"]
    checks["profile_memory"], checks["profile_throughput"] = profile_memory_and_throughput(model, device, sizes, gpu)
    checks["no_host_sync_in_hooks"] = no_host_sync(model, device, sizes, neurons)
    checks["decode_step_time"] = decode_step_time(model, device, sizes, neurons, gpu)
    checks["two_device_split"] = two_device_split(model, device, sizes, neurons)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["passed"] = all(entry["passed"] is not False for entry in checks.values())
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
