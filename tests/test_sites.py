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
