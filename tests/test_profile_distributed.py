"""`torchrun --nproc_per_node=2 -m lape_harness profile` on CPU (gloo) equals one process,
also when it resumes the checkpoints of an interrupted 2-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from builders import PROFILE_LANGUAGES, PROFILE_SEQ_LEN, load_pretrained

from lape_harness.corpora import open_corpus
from lape_harness.neurons import ActivationStats
from lape_harness.profile import profile_model

INTERRUPTED_RANKS = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from lape_harness.corpora import open_corpus
from lape_harness.profile import Distributed, profile_model

model_path, folder, partial = sys.argv[1:4]
dist = Distributed.from_env(use_cuda=False)
model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
calls = []
def stop_after_two_batches(module, args):
    calls.append(1)
    if len(calls) > 2:
        # both ranks past their second batch before either exits: torchrun ends the other rank as
        # soon as one fails, and a rank still loading would have nothing to checkpoint yet
        torch.distributed.barrier()
        raise SystemExit(3)
model.base_model.register_forward_pre_hook(stop_after_two_batches)
profile_model(model, AutoTokenizer.from_pretrained(model_path), open_corpus(folder, sys.argv[4:]), seq_len=%d,
              batch_size=2, checkpoint_dir=partial, progress=False, dist=dist)
""" % PROFILE_SEQ_LEN  # noqa: UP031 - the script holds braces of its own


def torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_resume_and_equal_one_process(tiny_llama, profile_corpus, tmp_path):
    folder = profile_corpus[0]
    single = profile_model(*load_pretrained(tiny_llama), open_corpus(folder, PROFILE_LANGUAGES), seq_len=PROFILE_SEQ_LEN,
                           batch_size=3, progress=False)
    out = tmp_path / "stats.safetensors"
    partial = tmp_path / "stats.partial"

    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_RANKS)
    interrupted = torchrun(str(script), str(tiny_llama), str(folder), str(partial), *PROFILE_LANGUAGES, cwd=tmp_path)
    assert interrupted.returncode != 0
    saved = sorted(path.name for path in partial.iterdir())
    assert "de.rank0-of-2.safetensors" in saved and "de.rank1-of-2.safetensors" in saved

    finished = torchrun("-m", "lape_harness", "profile", "--model", str(tiny_llama), "--corpus", str(folder),
                        "--languages", *PROFILE_LANGUAGES, "--seq-len", str(PROFILE_SEQ_LEN), "--batch-size", "2",
                        "--no-progress", "--device", "cpu", "--out", str(out), cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"wrote {out}: 3 languages" in finished.stdout and "2 process(es)" in finished.stdout
    assert finished.stdout.count("wrote") == 1  # only rank 0 writes
    assert not partial.exists()

    stats = ActivationStats.load(out)
    assert stats.languages == PROFILE_LANGUAGES and stats.meta["world_size"] == 2
    assert torch.equal(stats.tokens, single.tokens)
    assert torch.equal(stats.over_zero, single.over_zero)
    torch.testing.assert_close(stats.activation_sum, single.activation_sum, rtol=1e-12, atol=1e-9)
