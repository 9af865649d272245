import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, OPTConfig

from lape_harness.sites import UnsupportedArchitectureError, find_sites


def _capture(model, sites, input_ids):
    seen = {}
    handles = [s.activation.register_forward_hook(lambda m, i, o, layer=s.layer: seen.__setitem__(layer, o)) for s in sites]
    with torch.no_grad():
        model(input_ids)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_site_output_feeds_the_down_projection(fixture, request):
    """Gated: down_proj input = activation * up_proj(x). Non-gated: down_proj input = activation."""
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture)).eval()
    sites = find_sites(model)
    assert [s.layer for s in sites] == [0, 1] and all(s.width == 128 for s in sites)
    down_inputs, mlp_inputs = {}, {}
    handles = []
    for site in sites:
        handles.append(site.down_proj.register_forward_hook(lambda m, i, o, k=site.layer: down_inputs.__setitem__(k, i[0])))
        if fixture == "tiny_llama":
            mlp = model.model.layers[site.layer].mlp
            handles.append(mlp.register_forward_pre_hook(lambda m, i, k=site.layer: mlp_inputs.__setitem__(k, i[0])))
    acts = _capture(model, sites, torch.tensor([[1, 5, 9, 13]]))
    for handle in handles:
        handle.remove()
    for site in sites:
        if fixture == "tiny_llama":
            up = model.model.layers[site.layer].mlp.up_proj(mlp_inputs[site.layer])
            assert torch.allclose(down_inputs[site.layer], acts[site.layer] * up, atol=1e-6)
        else:
            assert torch.equal(down_inputs[site.layer], acts[site.layer])


def test_gated_site_is_act_fn_before_up_projection(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    layer = model.model.layers[0]
    x = torch.randn(1, 3, model.config.hidden_size)
    acts = {}
    handle = find_sites(model)[0].activation.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    with torch.no_grad():
        layer.mlp(x)
        manual = torch.nn.functional.silu(x @ layer.mlp.gate_proj.weight.T)
    handle.remove()
    assert torch.allclose(acts["a"], manual, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=50),
     OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=50,
               word_embed_proj_dim=32)],
)
def test_non_gated_architectures(config):
    model = AutoModelForCausalLM.from_config(config)
    sites = find_sites(model)
    assert len(sites) == 2 and sites[0].width == 64
    acts = _capture(model, sites, torch.tensor([[1, 2, 3]]))
    assert acts[1].shape[-1] == 64


def test_unsupported_architecture_names_its_model_type():
    class Config:
        model_type = "mystery-lm"

    model = torch.nn.Linear(2, 2)
    model.config = Config()
    with pytest.raises(UnsupportedArchitectureError, match="'mystery-lm'"):
        find_sites(model)


def test_a_down_projection_without_weights_is_a_user_error():
    from lape_harness.errors import LapeError
    from lape_harness.sites import NeuronSite

    class Weightless(torch.nn.Module):
        in_features = 8

    site = NeuronSite(0, "layers.0.mlp.act_fn", torch.nn.Identity(), Weightless(), 8)
    with pytest.raises(UnsupportedArchitectureError, match="has no parameters.*load the model with plain") as error:
        site.device
    assert isinstance(error.value, LapeError)


# ---------------------------------------------------------------------------------------------
# Every architecture of the site table, on a tiny random model built from transformers' own config

from lape_harness.sites import SITE_TABLE  # noqa: E402

TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
_GPT = dict(vocab_size=128, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
               patch_size=14)
# Per model_type, what differs from TINY (a new SITE_TABLE entry whose config takes TINY needs nothing here).
TINY_CONFIGS = {
    "gpt2": _GPT,
    "gpt_bigcode": _GPT,
    "gptj": {**_GPT, "rotary_dim": 4},
    "bloom": dict(vocab_size=128, hidden_size=32, n_layer=2, n_head=4),  # MLP width is 4 × hidden
    "falcon": dict(vocab_size=128, hidden_size=32, ffn_hidden_size=48, num_hidden_layers=2, num_attention_heads=4),
    "opt": dict(vocab_size=128, hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=0),
    "gemma3": dict(text_config=TINY, vision_config=_VISION, mm_tokens_per_image=4),
    "mistral3": dict(text_config={**TINY, "model_type": "mistral"},
                     vision_config={**_VISION, "model_type": "pixtral", "head_dim": 8}, image_token_index=127),
}


def tiny_model(kind: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, **TINY_CONFIGS.get(kind, TINY))
    try:
        model = AutoModelForCausalLM.from_config(config)
    except ValueError:  # a multimodal checkpoint that transformers loads only as image-text-to-text (Mistral-3)
        model = AutoModelForImageTextToText.from_config(config)
    return model.eval()


@pytest.mark.parametrize("kind", sorted(SITE_TABLE))
def test_every_architecture_in_the_site_table(kind):
    """One site per decoder layer, as wide as the MLP, each an activation module that runs once per
    forward pass; neuron j of a site is input column j of the down projection (gated: multiplied by
    the up projection, non-gated: the activation itself)."""
    model = tiny_model(kind)
    assert model.config.model_type == kind
    sites = find_sites(model)
    spec = SITE_TABLE[kind]
    assert len(sites) == 2
    assert all(site.width == (128 if kind == "bloom" else 48) for site in sites)
    assert all(not list(site.activation.parameters()) for site in sites)  # the activation function itself
    input_ids = torch.tensor([[5, 9, 13, 17, 21, 25]])
    for site in sites:
        column = 7
        seen, calls = {}, []

        def edit(module, inputs, output):
            calls.append(site.layer)
            seen["activation"] = output.clone()
            output = output.clone()
            output[..., column] = 0.0
            return output

        handles = [site.activation.register_forward_hook(edit),
                   site.down_proj.register_forward_pre_hook(lambda m, i: seen.__setitem__("down_input", i[0]))]
        try:
            with torch.no_grad():
                model(input_ids=input_ids)
        finally:
            for handle in handles:
                handle.remove()
        assert calls == [site.layer]  # one call per forward pass: the module is not shared between layers
        activation, down_input = seen["activation"], seen["down_input"]
        assert activation.shape[-1] == down_input.shape[-1] == site.width
        assert torch.all(down_input[..., column] == 0)  # neuron j feeds input column j of the down projection
        others = torch.arange(site.width) != column
        if spec.gated:
            assert not torch.allclose(down_input[..., others], activation[..., others])  # × up projection
        else:
            assert torch.equal(down_input[..., others], activation[..., others])


@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe", "olmoe"])
def test_mixture_of_experts_models_get_a_clear_error(kind):
    from transformers import AutoConfig

    config = AutoConfig.for_model(kind)
    model = torch.nn.Linear(2, 2)
    model.config = config
    with pytest.raises(UnsupportedArchitectureError, match=f"model_type '{kind}' is a mixture-of-experts model"):
        find_sites(model)


@pytest.mark.parametrize("kind", sorted(SITE_TABLE))
def test_neuron_slices_compute_exactly_that_neuron(kind):
    """Zeroing neuron j's input slices (gate and up rows, or the input row and its bias) zeroes input
    j of the down projection and nothing else; the last slice is the down projection's input j."""
    from lape_harness.sites import neuron_slices

    model = tiny_model(kind)
    input_ids = torch.tensor([[5, 9, 13, 17, 21, 25]])
    for site in find_sites(model):
        slices = neuron_slices(model, site.layer)
        down = slices[-1]
        assert down.module is site.down_proj and down.name == "weight"
        assert down.module.weight.shape[down.dim] == site.width
        seen = {}
        handle = site.down_proj.register_forward_pre_hook(lambda m, i: seen.__setitem__("input", i[0].clone()))
        try:
            with torch.no_grad():
                model(input_ids=input_ids)
                before = seen["input"]
                column = 7
                for entry in slices[:-1]:
                    tensor = getattr(entry.module, entry.name)
                    for copy in range(entry.copies):
                        tensor.select(entry.dim, column + copy * site.width).zero_()
                model(input_ids=input_ids)
        finally:
            handle.remove()
        after = seen["input"]
        others = torch.arange(site.width) != column
        assert torch.all(after[..., column] == 0) and not torch.all(before[..., column] == 0)
        assert torch.equal(after[..., others], before[..., others])
