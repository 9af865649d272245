"""The steering arguments both engines share (lape_harness.plugin.steered_lm.SteeringArgs) and the one
constructor sequence (SteeredLM), shown on hf-steered with a tiny model."""

from __future__ import annotations

import dataclasses

import pytest

from lape_harness.errors import InputError
from lape_harness.plugin.steered_lm import SteeringArgs
from lape_harness.steering.plan import SteeringPlan


@pytest.mark.parametrize(("arguments", "message"), [
    ({"steer": "-de"}, "steer=-de needs a neuron set"),
    ({"steer": "auto"}, "steer=auto needs a neuron set"),
    ({"steer_scope": "every"}, "steer_scope='every' is not one of all, prompt, generated"),
    ({"steer_bos": "maybe"}, "steer_bos='maybe' is not true or false"),
    ({"allow_other_model": "yes"}, "allow_other_model='yes': write allow_other_model=True or False"),
    ({"steer": "-de+"}, "steer="),
])
def test_every_steering_argument_is_checked_once_before_any_weights(arguments, message):
    with pytest.raises(InputError, match=message):
        SteeringArgs.parse(**arguments)


def test_an_engine_states_what_it_cannot_honour():
    with pytest.raises(InputError, match="steer_scope=generated is not supported by this engine"):
        SteeringArgs.parse(steer_scope="generated", scopes=("all",))
    with pytest.raises(InputError, match="steer_bos=false is not supported by this engine"):
        SteeringArgs.parse(steer_bos="false", steer_bos_false=False)


def test_the_parsed_arguments_carry_the_neuron_file_and_its_content_hash(neuron_file):
    path = neuron_file()
    args = SteeringArgs.parse(neurons=str(path), steer="+2*de-fr", steer_scope="prompt", steer_bos="False")
    assert isinstance(args.spec, SteeringPlan) and str(args.spec) == "-fr+2*de"
    assert (args.scope, args.steer_bos, args.neurons_path) == ("prompt", False, str(path))
    assert args.neurons_hash == args.neuron_set.content_hash()
    with pytest.raises(InputError, match="'xx'"):
        SteeringArgs.parse(neurons=str(path), steer="-xx")
    with pytest.raises(dataclasses.FrozenInstanceError):  # one object, read by every step of the constructor
        args.scope = "all"


def test_hf_steered_checks_the_loaded_model_when_the_configuration_could_not_be_read_before(
        tiny_llama, neuron_file, monkeypatch):
    """The identity fallback after loading (shared by both engines): a set for another shape is refused."""
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.plugin.steered_lm import SteeredLM

    monkeypatch.setattr(SteeredLM, "_identity_before_load", lambda self, pretrained, model_args: None)
    other = neuron_file(num_layers=3, width=128)
    with pytest.raises(InputError, match="layers: file has 3"):
        HFSteeredLM(pretrained=str(tiny_llama), device="cpu", neurons=str(other), steer="de")
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", neurons=str(neuron_file(tiny_llama)), steer="de")
    assert lm.identity["config_hash"] and lm.steering_signature()["plan"] == "+de"
    with pytest.raises(InputError, match="steer=-fr needs a neuron set"):
        HFSteeredLM(pretrained=str(tiny_llama), device="cpu", steer="-fr")
