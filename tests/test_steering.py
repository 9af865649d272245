"""The steer= grammar, plan compilation and the hooks, against plain per-neuron references."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from lape_harness.neurons import LanguageNeurons, NeuronSet
from lape_harness.steering import (
    AutoPlan,
    HooksDidNotFire,
    SteerSyntaxError,
    SteeringHooks,
    Term,
    compile_plan,
    parse_steer,
)
from lape_harness.task_languages import TaskLanguages

# This shared 2-core machine runs several jobs: one thread avoids thread-spin contention (10-100x).
torch.set_num_threads(1)

LANGUAGES = ["de", "fr", "en", "es"]


def make_neuron_set(num_layers: int, width: int, languages=LANGUAGES, per_layer: int = 12, seed: int = 0,
                    skip_layer: int | None = None) -> NeuronSet:
    """Random neurons per language; languages share some neurons; ``skip_layer`` has none."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(width, generator=generator)[: per_layer * 2]  # a small pool, so sets overlap
    neurons = {}
    for language in languages:
        layers, indices = [], []
        for layer in range(num_layers):
            if layer == skip_layer:
                continue
            chosen = pool[torch.randperm(len(pool), generator=generator)[:per_layer]].sort().values
            layers.append(torch.full((per_layer,), layer, dtype=torch.long))
            indices.append(chosen)
        count = sum(len(x) for x in layers)
        neurons[language] = LanguageNeurons(
            layer=torch.cat(layers),
            index=torch.cat(indices),
            mean=torch.randn(count, generator=generator),
            others_mean=torch.randn(count, generator=generator),
            probability=torch.rand(count, generator=generator),
        )
    return NeuronSet(list(languages), num_layers, width, neurons, {"model": {"model_id": "tiny"}})


def reference_edit(a: torch.Tensor, layer: int, steps: list[tuple], neurons: NeuronSet) -> torch.Tensor:
    """The paper's operations one neuron at a time, in the order given: (op, language, strength, value)."""
    a = a.clone()
    for op, language, strength, value in steps:
        entry = neurons[language]
        for l, j, mu, others, p in zip(entry.layer.tolist(), entry.index.tolist(), entry.mean.tolist(),
                                       entry.others_mean.tolist(), entry.probability.tolist()):
            if l != layer:
                continue
            v = {"mean": mu, "diff": mu - others, "p": p}[value]
            if op == "deactivate":
                a[..., j] = strength
            elif op == "multiply":
                a[..., j] = a[..., j] * strength
            elif op == "add":
                a[..., j] = a[..., j] + strength * v
            else:
                a[..., j] = strength * v
    return a


class ReferenceActivation(torch.nn.Module):
    """Wraps an activation module and edits its output by :func:`reference_edit` at chosen positions."""

    def __init__(self, inner, layer, steps, neurons, positions=None):
        super().__init__()
        self.inner, self.layer, self.steps, self.neurons, self.positions = inner, layer, steps, neurons, positions

    def forward(self, x):
        a = self.inner(x)
        edited = reference_edit(a, self.layer, self.steps, self.neurons)
        if self.positions is None:
            return edited
        keep = self.positions(a.shape[-2]).view(1, -1, 1)
        return torch.where(keep, edited, a)


def patch_reference(model, steps, neurons, positions=None):
    """Replace every layer's activation module by a :class:`ReferenceActivation`; returns an undo."""
    from lape_harness.sites import find_sites

    patched = []
    for site in find_sites(model):
        parent_name, _, attribute = site.name.rpartition(".")
        parent = model.get_submodule(parent_name)
        patched.append((parent, attribute, site.activation))
        setattr(parent, attribute, ReferenceActivation(site.activation, site.layer, steps, neurons, positions))

    def undo():
        for parent, attribute, original in patched:
            setattr(parent, attribute, original)

    return undo


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


# ---------------------------------------------------------------------------------------------
# Grammar


@pytest.mark.parametrize(
    "spec, canonical, terms",
    [
        ("de", "+de", [Term("add", "de", 1.0)]),
        ("-de", "-de", [Term("deactivate", "de", 0.0)]),
        ("-de+fr", "-de+fr", [Term("deactivate", "de", 0.0), Term("add", "fr", 1.0)]),
        ("-en-fr-es", "-en-fr-es", [Term("deactivate", x, 0.0) for x in ("en", "fr", "es")]),
        ("+2*de", "+2*de", [Term("add", "de", 2.0)]),
        ("+2de", "+2*de", [Term("add", "de", 2.0)]),
        ("=de", "=de", [Term("replace", "de", 1.0)]),
        ("+0.5*de.diff", "+0.5*de.diff", [Term("add", "de", 0.5, "diff")]),
        ("+de.p", "+de.p", [Term("add", "de", 1.0, "p")]),
        ("*0.5*de", "*0.5*de", [Term("multiply", "de", 0.5)]),
        ("-de=-1.5", "-de=-1.5", [Term("deactivate", "de", -1.5)]),
        ("+-1*de", "+-1*de", [Term("add", "de", -1.0)]),
        ("-de=fr", "-de=fr", [Term("deactivate", "de", 0.0), Term("replace", "fr", 1.0)]),
        ("deu_Latn", "+de", [Term("add", "de", 1.0)]),
        # the paper's order: deactivations, multiplications, then activations as written
        ("+fr*2*de-en=-2.5+es", "-en=-2.5*2*de+fr+es",
         [Term("deactivate", "en", -2.5), Term("multiply", "de", 2.0), Term("add", "fr", 1.0), Term("add", "es", 1.0)]),
    ],
)
def test_grammar_forms(spec, canonical, terms):
    plan = parse_steer(spec)
    assert list(plan.terms) == terms
    assert str(plan) == canonical
    assert parse_steer(canonical) == plan


def test_none_and_auto():
    assert not parse_steer(None) and not parse_steer("none") and str(parse_steer("none")) == "none"
    assert parse_steer("auto") == AutoPlan()
    template = parse_steer("auto:-src=-1.5+2*tgt.diff")
    forcing = template.for_task(TaskLanguages("forcing", "de", "fr"))
    assert str(forcing) == "-de=-1.5+2*fr.diff"
    assert str(template.for_task(TaskLanguages("translation", "en", "fr"))) == "+2*fr.diff"
    assert str(template.for_task(TaskLanguages("monolingual", None, "de"))) == "+2*de.diff"
    default = AutoPlan()
    assert str(default.for_task(TaskLanguages("forcing", "de", "fr"))) == "-de+fr"
    assert str(default.for_task(TaskLanguages("translation", "en", "fr"))) == "+fr"
    assert str(default.for_task(TaskLanguages("monolingual", None, "de"))) == "+de"


@pytest.mark.parametrize(
    "spec, caret_at, words",
    [
        ("-de+", 4, "expected a language code"),
        ("-2*de", 1, "takes no factor"),
        ("*de", 1, "needs a factor"),
        ("+de.x", 4, "unknown value"),
        ("-de.diff", 3, "only applies"),
        ("de fr", 3, "expected '+'"),
        ("-de=", 4, "expected a number"),
        ("auto:+de", 6, "'src' or 'tgt'"),
        ("+tgt", 1, "auto template"),
    ],
)
def test_parse_errors_point_at_the_token(spec, caret_at, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(spec)
    lines = str(error.value).splitlines()
    assert words in lines[0]
    assert lines[1] == f"  {spec}"
    assert lines[2] == "  " + " " * caret_at + "^"
    assert "valid example: steer=" in str(error.value)


def test_plan_files(tmp_path):
    yaml_file = tmp_path / "plan.yaml"
    yaml_file.write_text("terms:\n  - -en=-1.5\n  - fr\n  - {op: add, language: de, strength: 2, value: diff}\n")
    assert str(parse_steer(str(yaml_file))) == "-en=-1.5+fr+2*de.diff"
    json_file = tmp_path / "plan.json"
    json_file.write_text(json.dumps({"steer": "-de+fr"}))
    assert str(parse_steer(str(json_file))) == "-de+fr"
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms:\n  - {op: scale, language: de}\n")
    with pytest.raises(SteerSyntaxError, match="needs 'op'"):
        parse_steer(str(bad))
    with pytest.raises(SteerSyntaxError, match="does not exist"):
        parse_steer(str(tmp_path / "missing.yaml"))


def test_unknown_language_lists_the_file_languages():
    neurons = make_neuron_set(2, 64)
    with pytest.raises(Exception, match="it has: de, fr, en, es"):
        compile_plan(parse_steer("+ja"), neurons, 2, 64)


# ---------------------------------------------------------------------------------------------
# Compilation equals the per-neuron reference


CASES = [
    ("+de", [("add", "de", 1.0, "mean")]),
    ("+2*de", [("add", "de", 2.0, "mean")]),
    ("=de", [("replace", "de", 1.0, "mean")]),
    ("+1.5*de.diff", [("add", "de", 1.5, "diff")]),
    ("+de.p", [("add", "de", 1.0, "p")]),
    ("*0.5*de", [("multiply", "de", 0.5, "mean")]),
    ("-de", [("deactivate", "de", 0.0, "mean")]),
    ("-de=-1.5", [("deactivate", "de", -1.5, "mean")]),
    ("-de+fr", [("deactivate", "de", 0.0, "mean"), ("add", "fr", 1.0, "mean")]),
    ("+fr-de", [("deactivate", "de", 0.0, "mean"), ("add", "fr", 1.0, "mean")]),
    ("-en-fr-es", [("deactivate", x, 0.0, "mean") for x in ("en", "fr", "es")]),
    ("+de=fr*3*es-en=-2.5", [("deactivate", "en", -2.5, "mean"), ("multiply", "es", 3.0, "mean"),
                             ("add", "de", 1.0, "mean"), ("replace", "fr", 1.0, "mean")]),
]


@pytest.mark.parametrize("spec, steps", CASES)
def test_compiled_edits_equal_reference(spec, steps):
    neurons = make_neuron_set(3, 64, skip_layer=1)
    edits = compile_plan(parse_steer(spec), neurons, 3, 64)
    assert 1 not in edits  # no work at all where the plan has no neurons
    a = torch.randn(2, 5, 64, dtype=torch.float64)
    for layer in (0, 2):
        got = edits[layer].apply(a.clone())
        torch.testing.assert_close(got, reference_edit(a, layer, steps, neurons))


# ---------------------------------------------------------------------------------------------
# Hooks on a model


@pytest.mark.parametrize("spec, steps", CASES[:1] + CASES[2:4] + CASES[5:6] + CASES[7:9] + CASES[-1:])
def test_hooked_logits_equal_patched_reference(llama, spec, steps):
    width = llama.config.intermediate_size
    neurons = make_neuron_set(2, width)
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
    neurons = make_neuron_set(2, llama.config.intermediate_size)
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
        with pytest.raises(HooksDidNotFire, match=r"layers \[0, 1\]"):
            with hooks.active():
                pass  # a steered call that never reached the MLPs
        hooks.use(parse_steer("none"))
        with hooks.active():
            pass  # nothing to steer, nothing to check
    finally:
        hooks.remove()


def test_steering_needs_neurons_and_matching_shape(llama):
    hooks = SteeringHooks(llama, None)
    try:
        with pytest.raises(Exception, match="needs a neuron set"):
            hooks.use(parse_steer("+de"))
    finally:
        hooks.remove()
    with pytest.raises(Exception, match="MLP width: file has 64"):
        SteeringHooks(llama, make_neuron_set(2, 64))


def test_tensors_sit_on_each_layers_device_and_dtype(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.model.layers[0].to(torch.float64)
    model.model.layers[1].to("meta")  # a layer placed elsewhere (as with device_map / parallelize)
    neurons = make_neuron_set(2, model.config.intermediate_size)
    hooks = SteeringHooks(model, neurons)
    hooks.use(parse_steer("-de+2*fr*0.5*es"))
    edits = hooks.edits()
    assert edits[0].index.device.type == "cpu" and edits[0].shift.dtype == torch.float64
    assert edits[0].scale.dtype == torch.float64
    assert edits[1].index.device.type == "meta" and edits[1].shift.device.type == "meta"
    assert edits[1].shift.dtype == torch.float32
    hooks.remove()


def _greedy_without_cache(model, ids, steps_count):
    for _ in range(steps_count):
        with torch.no_grad():
            next_token = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    return ids


@pytest.mark.parametrize("scope", ["all", "prompt", "generated"])
def test_scope_under_kv_cache_equals_full_recompute(llama, scope):
    neurons = make_neuron_set(2, llama.config.intermediate_size)
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
        "generated": lambda n: torch.arange(n) >= length,
    }[scope]
    undo = patch_reference(llama, steps, neurons, positions)
    try:
        reference = _greedy_without_cache(llama, prompt, 6)
    finally:
        undo()
    assert torch.equal(cached, reference)


def test_bad_scope():
    with pytest.raises(Exception, match="steer_scope='answer'"):
        SteeringHooks(torch.nn.Linear(2, 2), None, scope="answer")


@pytest.mark.parametrize("spec", ["-de", "-de+fr", "-en-fr-es", "=de", "-de=-1.5+2*fr.diff", "*0.5*de", "auto",
                                  "auto:-src=-1+2*tgt", "none", "+de.p"])
def test_specs_survive_lm_eval_model_args(spec):
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(f"pretrained=some/model,neurons=n.safetensors,steer={spec},steer_scope=all")
    assert parse_steer(args["steer"]) == parse_steer(spec)


def test_gpt2_hooked_logits_equal_patched_reference(tiny_gpt2):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, dtype=torch.float32).eval()
    neurons = make_neuron_set(model.config.n_layer, model.config.n_inner)
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

    hooks = SteeringHooks(llama, make_neuron_set(2, llama.config.intermediate_size))
    hooks.use(parse_steer("none"))
    assert all(not site.activation._forward_hooks for site in find_sites(llama))
    hooks.use(parse_steer("+de"))
    hooks.use(parse_steer("-fr"))
    assert all(len(site.activation._forward_hooks) == 1 for site in find_sites(llama))  # once, not per plan
    hooks.remove()
    assert all(not site.activation._forward_hooks for site in find_sites(llama))
