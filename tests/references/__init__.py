"""References the tests compare the package against: independent implementations written plainly
(loops over neurons, tokens and words; no code shared with ``lape_harness``), each module naming
the paper step, standard or original code it follows.

* ``lape``: LAPE neuron selection (Tang et al. 2024, §2 and their ``identify.py``).
* ``profile``: the activation counts behind LAPE (Tang et al. 2024, their ``activation.py``).
* ``steering``: the steering operations one neuron at a time (Gurgurov et al. 2025), a model
  patched with them, and scores and answers of a model with neurons deactivated by hand.
* ``metrics``: the paper's F1 and SQuAD's F1 for extractive QA.
* ``language_confusion``: LPR and WPR of the Language Confusion Benchmark (Marchisio et al. 2024).
* ``lens``: the logit lens (nostalgebraist 2020) from ``output_hidden_states``.
* ``finetune``: the weights neuron-restricted fine-tuning may change, per architecture.
"""
