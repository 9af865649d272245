"""Profiling throughput and memory.

Throughput, side by side in one run on the same packed sequences (best of several
interleaved repeats):

* ``lape-harness profile``'s engine (:func:`lape_harness.profile.profile_model`: tokenizing
  and packing the text, the decoder body with the counting hooks, no LM head), against
* a plain full forward ``model(input_ids)`` of the same rows (LM head included, no hooks), and
* a reference-style profiler: the same full forward with a per-layer hook that does what the
  paper's code does in its hook (cast the activations to float32, count > 0 and sum over all
  tokens) — on already-packed rows, so it does not even pay for tokenization.

Ratios are tokens/s of ``profile`` divided by tokens/s of the other. Targets: ≥ 1.5× a plain
forward on Gemma-3-270m (whose LM head is most of the compute), ≥ 0.9× on the tiny model
(cheap head), ≥ 2× the reference-style profiler on Gemma-3-270m.

Memory: peak resident memory of a ``lape-harness profile`` process as the corpus grows 1×,
4×, 16× (fresh processes, the 2-layer tiny model, seq-len 64, so that the corpus is large
relative to the model); it must stay flat.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.models import gemma_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builder lives with the tests

SEQ_LEN = 512
BATCH_SIZE = 8


def write_text(path: Path, tokens_wanted: int, chars_per_token: float = 3.0, seed: int = 0) -> Path:
    """A text file of shuffled multilingual sentences, about ``tokens_wanted`` tokens long."""
    from builders import SAMPLE_TEXT

    sentences = [s.strip() + "." for text in SAMPLE_TEXT.values() for s in text.split(".") if s.strip()]
    rng = random.Random(seed)
    paragraphs, size = [], 0
    while size < tokens_wanted * chars_per_token:
        paragraph = " ".join(rng.choice(sentences) for _ in range(rng.randint(2, 8)))
        paragraphs.append(paragraph)
        size += len(paragraph)
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def measure_throughput(model_path: str, label: str, tokens: int, repeats: int, dtype: str = "float32") -> dict:
    """Seconds for profile / plain full forward / reference-style profiler on the same sequences."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.corpora import Packing, open_corpus
    from lape_harness.hf_loading import load_pretrained
    from lape_harness.profile import profile_model
    from lape_harness.sites import find_sites

    model = load_pretrained(AutoModelForCausalLM, model_path, dtype=getattr(torch, dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    with tempfile.TemporaryDirectory() as folder:
        write_text(Path(folder) / "en.txt", tokens)
        sources = open_corpus(folder, ["en"])
        packing = Packing.for_tokenizer(tokenizer, SEQ_LEN)
        chunks = list(packing.chunks(sources["en"].documents(), tokenizer, max_tokens=tokens))
        rows = [packing.prefix + c + c[-1:] * (packing.chunk_len - len(c)) for c in chunks]
        batches = [torch.tensor(rows[i : i + BATCH_SIZE]) for i in range(0, len(rows), BATCH_SIZE)]
        counted = sum(len(c) for c in chunks)

        def profile():
            profile_model(model, tokenizer, sources, seq_len=SEQ_LEN, batch_size=BATCH_SIZE, max_tokens=tokens,
                          progress=False)

        def plain_forward():
            with torch.inference_mode():
                for batch in batches:
                    model(input_ids=batch, use_cache=False)

        sites = find_sites(model)

        def reference_profiler():
            over_zero = [torch.zeros(site.width, dtype=torch.int64) for site in sites]
            sums = [torch.zeros(site.width, dtype=torch.float32) for site in sites]

            def hook(layer):
                def record(module, inputs, output):
                    activation = output.float()
                    over_zero[layer] += (activation > 0).sum(dim=(0, 1))
                    sums[layer] += activation.sum(dim=(0, 1))

                return record

            handles = [site.activation.register_forward_hook(hook(site.layer)) for site in sites]
            try:
                plain_forward()
            finally:
                for handle in handles:
                    handle.remove()

        timings = {"profile": [], "forward": [], "reference": []}
        plain_forward()  # warm-up
        for _ in range(repeats):
            for name, fn in (("profile", profile), ("forward", plain_forward), ("reference", reference_profiler)):
                started = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in timings.items()}
    return {"label": label, "tokens": counted, "rows": len(rows), **best}


def throughput_rows(result: dict, forward_target: float, reference_target: float | None) -> list[dict]:
    per_second = {name: result["tokens"] / result[name] for name in ("profile", "forward", "reference")}
    details = (f"{result['tokens']:,} tokens in {result['rows']} rows of {SEQ_LEN}, batch {BATCH_SIZE}; tokens/s: "
               f"profile {per_second['profile']:,.0f}, full forward {per_second['forward']:,.0f}, "
               f"reference-style {per_second['reference']:,.0f}")
    vs_forward = per_second["profile"] / per_second["forward"]
    vs_reference = per_second["profile"] / per_second["reference"]
    return [
        {"benchmark": "profile vs full forward", "model": result["label"], "value": vs_forward, "unit": "ratio",
         "target": f"≥ {forward_target}", "passed": vs_forward >= forward_target, "details": details},
        {"benchmark": "profile vs reference-style profiler", "model": result["label"], "value": vs_reference,
         "unit": "ratio", "target": f"≥ {reference_target}" if reference_target else "",
         "passed": (vs_reference >= reference_target) if reference_target else None, "details": details},
    ]


MEMORY_CHILD = """
import sys
from lape_harness.cli import main
code = main(["profile", "--model", sys.argv[1], "--corpus", sys.argv[2], "--out", sys.argv[3], "--seq-len", "64",
             "--no-progress", "--device", "cpu"])
# VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's peak across exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
sys.exit(code)
"""


def memory_rows(model_path: str, base_tokens: int) -> list[dict]:
    """Peak RSS of a profile process at 1×, 4×, 16× the corpus; flat means no growth with the corpus."""
    peaks, sizes = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for factor in (1, 4, 16):
            corpus = Path(folder) / f"corpus{factor}"
            corpus.mkdir()
            text = write_text(corpus / "en.txt", base_tokens * factor, seed=factor)
            sizes[factor] = text.stat().st_size / 2**20
            done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, model_path, str(corpus),
                                   str(Path(folder) / f"stats{factor}.safetensors")],
                                  capture_output=True, text=True, timeout=1800)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"profile at {factor}x failed: {done.stderr[-2000:]}")
            lines = done.stdout.strip().splitlines()
            peaks[factor] = float(lines[-1])
    growth = peaks[16] / peaks[1]
    details = "; ".join(f"{f}×: corpus {sizes[f]:.1f} MB text, peak {peaks[f]:.0f} MB" for f in peaks)
    rows = [{"benchmark": f"profile peak memory, corpus {f}×", "model": "tiny llama", "value": peaks[f], "unit": "MB",
             "target": "", "passed": None, "details": f"corpus {sizes[f]:.1f} MB of text"} for f in peaks]
    rows.append({"benchmark": "profile peak memory 16× / 1× corpus", "model": "tiny llama", "value": growth,
                 "unit": "ratio", "target": "≤ 1.05 (flat)", "passed": growth <= 1.05, "details": details})
    return rows


def run(quick: bool) -> list[dict]:
    from builders import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tiny = str(build_tiny_model(Path(folder) / "tiny-llama", arch="llama", layers=4, width=512))
        tiny_result = measure_throughput(tiny, "tiny llama (4 layers, 512 neurons)", 10_000 if quick else 30_000,
                                         repeats=5 if quick else 7)  # fast and noisy: more repeats
        rows += throughput_rows(tiny_result, forward_target=0.9, reference_target=None)
        gemma = gemma_path()
        if gemma:
            result = measure_throughput(gemma, "gemma-3-270m (fp32, CPU)", 2_000 if quick else 4_000,
                                        repeats=2 if quick else 3)
            rows += throughput_rows(result, forward_target=1.5, reference_target=2.0)
        else:
            rows.append({"benchmark": "profile vs full forward", "model": "gemma-3-270m", "value": None, "unit": "ratio",
                         "target": "≥ 1.5", "passed": None,
                         "details": "skipped: not installed (pip install 'lape-harness[demo]', then use lape:gemma-3-270m once)"})
        small = str(build_tiny_model(Path(folder) / "tiny-small", arch="llama"))
        rows += memory_rows(small, 20_000 if quick else 100_000)
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for row in run(quick):
        print(json.dumps(row, ensure_ascii=False))
