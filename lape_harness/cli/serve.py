"""Serve a steered model: vLLM's own OpenAI-compatible server, each request under the plan it names.

A request names its plan in the steer= grammar, in its body ("steer": "-en+de") or in its model
name ("M:steer=-en+de", for clients that set only the model, such as lm-eval's local-completions);
a request that names none runs under --steer. Every response carries the plan's normalized form and
the neuron file's sha256 (headers x-lape-steer, x-lape-neurons-sha256, and system_fingerprint).
Every option after lape-harness's own is vLLM's (`vllm serve --help`): --port, --api-key,
--max-model-len, --tensor-parallel-size, --dtype, ... It binds to 127.0.0.1 unless --host is given.
Write plans that start with '-' as --steer=-en.

Example:
    $ lape-harness serve --model lape:gemma-3-270m --neurons neuron_cache/gemma-3-270m/lape-top2.safetensors \\
          --max-model-len 2048 --port 8000
    $ curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
          -d '{"model": "lape:gemma-3-270m", "steer": "-en+de", "prompt": "Q: How are you?\\nA:", "max_tokens": 16}'
"""

from __future__ import annotations

import argparse

HELP = "serve a steered model over vLLM's OpenAI-compatible API, the plan chosen per request"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lape_harness.plugin.vllm_serve import DEFAULT_HOST, PLAN_SLOTS, ServeOptions

    defaults = ServeOptions(model="", neurons="")
    parser.allow_abbrev = False  # vLLM's options pass through whole
    parser.add_argument("--model", required=True, help="Hugging Face model id or local folder (or lape:gemma-3-270m); "
                                                       "requests name it as their model; required")
    parser.add_argument("--neurons", required=True, help="neuron-set file from `lape-harness identify`; required")
    parser.add_argument("--steer", default="none", metavar="PLAN",
                        help="the plan of requests that name none: steer= grammar or a plan file (this server's "
                             "option only; requests send grammar text); not auto (default: none)")
    parser.add_argument("--plan-slots", type=int, default=PLAN_SLOTS,
                        help="plans the engine holds at once: slot 0 for --steer, the rest for the plans requests "
                             "ask for (a request waits while every slot is in use by other plans) "
                             f"(default: {PLAN_SLOTS})")
    parser.add_argument("--plan-cache", type=int, default=defaults.plan_cache,
                        help=f"compiled plans kept in memory (default: {defaults.plan_cache})")
    parser.add_argument("--max-plan-chars", type=int, default=defaults.max_plan_chars,
                        help=f"longest plan a request may send (default: {defaults.max_plan_chars})")
    parser.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes,
                        help=f"largest request body (default: {defaults.max_request_bytes})")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="steer with a neuron set made for another model on purpose (default: refuse)")
    parser.set_defaults(vllm_args=[], host_default=DEFAULT_HOST)
    parse_known = parser.parse_known_args

    def keep_vllm_options(args=None, namespace=None):
        """Every word lape-harness does not know is vLLM's (checked by vLLM's own parser in run)."""
        namespace, rest = parse_known(args, namespace)
        namespace.vllm_args = list(rest)
        return namespace, []

    parser.parse_known_args = keep_vllm_options


def run(args: argparse.Namespace) -> int:
    from lape_harness.plugin.vllm_serve import ServeOptions
    from lape_harness.plugin.vllm_serve import run as serve

    options = ServeOptions(model=args.model, neurons=args.neurons, steer=args.steer, plan_slots=args.plan_slots,
                           plan_cache=args.plan_cache, max_plan_chars=args.max_plan_chars,
                           max_request_bytes=args.max_request_bytes, allow_other_model=args.allow_other_model)
    serve(options, args.vllm_args)
    print("lape-harness serve: stopped")
    return 0
