"""The steering hooks on tiny models: logits equal a hand-patched per-neuron reference, scopes
under the KV cache, placement per layer, and the "hooks did not fire" check."""

from __future__ import annotations

import pytest
import torch
from builders import random_neuron_set
from references.steering import CASES, greedy_without_cache, patch_reference
from transformers import AutoModelForCausalLM

from lape_harness.errors import HookNeverFiredError
from lape_harness.steering import SteeringHooks, parse_steer

# This shared 2-core machine runs several jobs: one thread avoids thread-spin contention (10-100x).
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


# ---------------------------------------------------------------------------------------------
# Hooks on a model


@pytest.mark.parametrize("spec, steps", CASES[:1] + CASES[2:4] + CASES[5:6] + CASES[7:9] + CASES[-1:])
def test_hooked_logits_equal_patched_reference(llama, spec, steps):
    width = llama.config.intermediate_size
    neurons = random_neuron_set(2, width)
    ids = torch.randint(4, llama.config.vocab_size, (2, 9))
    hooks = SteeringHooks(llama, neurons)
    try:
        with torch.no_grad():
            plain = llama(ids).logits
            hooks.use(parse_steer(spec))
            with hooks.active():
                steered = llama(ids).logits
            hooks.use(parse_steer("none"))
            with hooks.active():
                back = llama(ids).logits
    finally:
        hooks.remove()
    undo = patch_reference(llama, steps, neurons)
    try:
        with torch.no_grad():
            reference = llama(ids).logits
    finally:
        undo()
    assert not torch.equal(steered, plain)
    torch.testing.assert_close(steered, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(back, plain)


def test_hooks_idle_outside_active_and_unfired_hooks_are_an_error(llama):
    neurons = random_neuron_set(2, llama.config.intermediate_size)
    ids = torch.randint(4, llama.config.vocab_size, (1, 6))
    hooks = SteeringHooks(llama, neurons)
    try:
        hooks.use(parse_steer("-de"))
        with torch.no_grad():
            plain = llama(ids).logits  # not inside active(): untouched
        hooks.remove()
        with torch.no_grad():
            assert torch.equal(llama(ids).logits, plain)
        hooks = SteeringHooks(llama, neurons)
        hooks.use(parse_steer("-de"))
        with pytest.raises(HookNeverFiredError, match=r"layers \[0, 1\]"):
            with hooks.active():
                pass  # a steered call that never reached the MLPs
        hooks.use(parse_steer("none"))
        with hooks.active():
            pass  # nothing to steer, nothing to check
    finally:
        hooks.remove()


def test_one_error_for_hooks_that_did_not_fire():
    from lape_harness.errors import LapeError
    from lape_harness.profile import HookNeverFiredError as ProfileError

    assert ProfileError is HookNeverFiredError and issubclass(HookNeverFiredError, LapeError)


def test_steering_needs_neurons_and_matching_shape(llama):
    hooks = SteeringHooks(llama, None)
    try:
        with pytest.raises(Exception, match="needs a neuron set"):
            hooks.use(parse_steer("+de"))
    finally:
        hooks.remove()
    with pytest.raises(Exception, match="MLP width: file has 64"):
        SteeringHooks(llama, random_neuron_set(2, 64))


def test_tensors_sit_on_each_layers_device_and_dtype(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.model.layers[0].to(torch.float64)
    model.model.layers[1].to("meta")  # a layer placed elsewhere (as with device_map / parallelize)
    neurons = random_neuron_set(2, model.config.intermediate_size)
    hooks = SteeringHooks(model, neurons)
    hooks.use(parse_steer("-de+2*fr*0.5*es"))
    edits = hooks.edits()
    assert edits[0].index.device.type == "cpu" and edits[0].shift.dtype == torch.float64
    assert edits[0].scale.dtype == torch.float64
    assert edits[1].index.device.type == "meta" and edits[1].shift.device.type == "meta"
    assert edits[1].shift.dtype == torch.float32
    hooks.remove()


@pytest.mark.parametrize("scope", ["all", "prompt", "generated"])
def test_scope_under_kv_cache_equals_full_recompute(llama, scope):
    neurons = random_neuron_set(2, llama.config.intermediate_size)
    steps = [("deactivate", "de", 0.0, "mean"), ("add", "fr", 3.0, "mean")]
    prompt = torch.randint(4, llama.config.vocab_size, (1, 7))
    length = prompt.shape[1]
    hooks = SteeringHooks(llama, neurons, scope=scope)
    try:
        hooks.use(parse_steer("-de+3*fr"))
        with torch.no_grad(), hooks.active(generating=True):
            cached = llama.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True,
                                    pad_token_id=0, eos_token_id=None)
    finally:
        hooks.remove()
    positions = {
        "all": None,
        "prompt": lambda n: torch.arange(n) < length,
        "generated": lambda n: torch.arange(n) >= length - 1,  # the last prompt position gives the first new token
    }[scope]
    undo = patch_reference(llama, steps, neurons, positions)
    try:
        reference = greedy_without_cache(llama, prompt, 6)
    finally:
        undo()
    assert torch.equal(cached, reference)


def test_bad_scope():
    with pytest.raises(Exception, match="steer_scope='answer'"):
        SteeringHooks(torch.nn.Linear(2, 2), None, scope="answer")


def test_gpt2_hooked_logits_equal_patched_reference(tiny_gpt2):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, dtype=torch.float32).eval()
    neurons = random_neuron_set(model.config.n_layer, model.config.n_inner)
    ids = torch.randint(4, model.config.vocab_size, (2, 8))
    hooks = SteeringHooks(model, neurons)
    hooks.use(parse_steer("-de=-1+2*fr.diff"))
    with torch.no_grad(), hooks.active():
        steered = model(ids).logits
    hooks.remove()
    undo = patch_reference(model, [("deactivate", "de", -1.0, "mean"), ("add", "fr", 2.0, "diff")], neurons)
    with torch.no_grad():
        reference = model(ids).logits
    undo()
    torch.testing.assert_close(steered, reference, rtol=1e-5, atol=1e-5)


def test_no_hooks_until_a_plan_steers(llama):
    from lape_harness.sites import find_sites

    hooks = SteeringHooks(llama, random_neuron_set(2, llama.config.intermediate_size))
    hooks.use(parse_steer("none"))
    assert all(not site.activation._forward_hooks for site in find_sites(llama))
    hooks.use(parse_steer("+de"))
    hooks.use(parse_steer("-fr"))
    assert all(len(site.activation._forward_hooks) == 1 for site in find_sites(llama))  # once, not per plan
    hooks.remove()
    assert all(not site.activation._forward_hooks for site in find_sites(llama))


# ---------------------------------------------------------------------------------------------
# steer_scope=generated steers the first new token; start tokens left unedited; quantized layers


def test_generated_scope_steers_the_first_new_token(llama):
    """The first new token comes from the prefill's last position: ``generated`` steers it there."""
    neurons = random_neuron_set(2, llama.config.intermediate_size)
    steps = [("deactivate", "de", 0.0, "mean"), ("add", "fr", 3.0, "mean")]
    prompt = torch.randint(4, llama.config.vocab_size, (2, 7))
    hooks = SteeringHooks(llama, neurons, scope="generated")
    try:
        hooks.use(parse_steer("-de+3*fr"))
        with torch.no_grad(), hooks.active(generating=True):
            out = llama.generate(prompt, max_new_tokens=1, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    finally:
        hooks.remove()
    with torch.no_grad():
        plain = llama(prompt).logits[:, -1]
    undo = patch_reference(llama, steps, neurons, lambda n: torch.arange(n) == n - 1)
    try:
        with torch.no_grad():
            reference = llama(prompt).logits[:, -1]
    finally:
        undo()
    assert not torch.allclose(out.scores[0], plain)
    torch.testing.assert_close(out.scores[0], reference, rtol=1e-5, atol=1e-5)


def test_start_tokens_are_left_unedited(llama):
    """``start_tokens`` (steer_bos=false): positions holding them keep their activations, wherever
    they are (right or left padding); every other position is steered."""
    from references.steering import unedited_tokens

    neurons = random_neuron_set(2, llama.config.intermediate_size)
    steps = [("deactivate", "de", -1.5, "mean"), ("add", "fr", 3.0, "mean")]
    ids = torch.tensor([[1, 5, 9, 13, 17, 21], [0, 0, 1, 7, 11, 15]])  # BOS = 1; the second row left-padded
    results = {}
    for name, start_tokens in (("all", ()), ("not_bos", (1,))):
        hooks = SteeringHooks(llama, neurons, start_tokens=start_tokens)
        try:
            hooks.use(parse_steer("-de=-1.5+3*fr"))
            with torch.no_grad(), hooks.active():
                results[name] = llama(ids).logits
        finally:
            hooks.remove()
    positions, remove = unedited_tokens(llama, [1])
    undo = patch_reference(llama, steps, neurons, positions)
    try:
        with torch.no_grad():
            reference = llama(ids).logits
    finally:
        undo()
        remove()
    with torch.no_grad():
        plain = llama(ids).logits
    torch.testing.assert_close(results["not_bos"], reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(results["not_bos"][0, 0], plain[0, 0])  # the start position sees only itself: unchanged
    assert not torch.allclose(results["all"][0, 0], plain[0, 0])


class Int8Linear(torch.nn.Module):
    """A down projection holding int8 weights and a float scale, as bitsandbytes' 8-bit layers do."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        scale = linear.weight.detach().abs().amax(dim=1, keepdim=True) / 127
        self.weight = torch.nn.Parameter(torch.round(linear.weight.detach() / scale).to(torch.int8), requires_grad=False)
        self.register_buffer("scale", scale)
        self.in_features = linear.in_features

    def forward(self, x):
        return x @ (self.weight.to(x.dtype) * self.scale.to(x.dtype)).T


def test_quantized_down_projection_steers_with_float_values(tiny_llama):
    """Steering values are kept as a float master copy and cast to the activation's dtype, not to
    the int8 weights' dtype (which would truncate every mean and fill)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for layer in model.model.layers:
        layer.mlp.down_proj = Int8Linear(layer.mlp.down_proj)
    neurons = random_neuron_set(2, model.config.intermediate_size)
    ids = torch.randint(4, model.config.vocab_size, (2, 9))
    hooks = SteeringHooks(model, neurons)
    assert all(site.dtype == torch.int8 for site in hooks.sites)
    try:
        hooks.use(parse_steer("-de=-1.5+fr"))
        with torch.no_grad(), hooks.active():
            steered = model(ids).logits
        assert all(edit.shift.dtype == torch.float32 for edit in hooks.edits().values())
    finally:
        hooks.remove()
    undo = patch_reference(model, [("deactivate", "de", -1.5, "mean"), ("add", "fr", 1.0, "mean")], neurons)
    try:
        with torch.no_grad():
            reference = model(ids).logits
    finally:
        undo()
    torch.testing.assert_close(steered, reference, rtol=1e-5, atol=1e-5)


def test_a_non_float_activation_is_refused(tiny_llama):
    from lape_harness.errors import InputError

    class IntegerActivation(torch.nn.Module):
        def forward(self, x):
            return torch.round(x).to(torch.int32)

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for layer in model.model.layers:
        layer.mlp.act_fn = IntegerActivation()
    hooks = SteeringHooks(model, random_neuron_set(2, model.config.intermediate_size))
    hooks.use(parse_steer("+de"))
    with pytest.raises(InputError, match="torch.int32 activations: lape-harness steers floating-point activations only"):
        with torch.no_grad(), hooks.active():
            model(torch.tensor([[5, 6, 7]]))
    hooks.remove()


def test_offloaded_layers_steer_where_they_compute(tiny_llama, tmp_path):
    """Layers that accelerate offloads (weights on meta, moved in per forward pass) get their edits
    on accelerate's execution device, and steer exactly as the loaded model does."""
    from accelerate import dispatch_model

    neurons = random_neuron_set(2, 128)
    ids = torch.randint(4, 300, (2, 9))
    logits = {}
    for name in ("loaded", "offloaded"):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
        if name == "offloaded":
            device_map = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "disk",
                          "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
            model = dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
        hooks = SteeringHooks(model, neurons)
        hooks.use(parse_steer("-de=-1.5+2*fr"))
        if name == "offloaded":
            assert hooks.sites[0].device.type == "meta"
            assert all(edit.index.device.type == "cpu" for edit in hooks.edits().values())
        with torch.no_grad(), hooks.active():
            logits[name] = model(ids).logits
        hooks.remove()
    torch.testing.assert_close(logits["offloaded"], logits["loaded"], rtol=1e-6, atol=1e-6)
