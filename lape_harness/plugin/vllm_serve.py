"""``lape-harness serve``: vLLM's own OpenAI-compatible server, steered per request.

The server is vLLM's: its argument parser (every ``vllm serve`` option), its engine client
(``AsyncLLM``), its FastAPI app and routes, its API-key middleware, its uvicorn set-up. lape-harness
adds what ``vllm-steered`` adds to the offline engine (the worker extension
:mod:`lape_harness.plugin.vllm_worker` with ``--plan-slots`` plan slots, and its start-up check,
run before the socket accepts a request) and one ASGI middleware,
:mod:`lape_harness.plugin.vllm_serve_middleware`, placed inside vLLM's own middleware (after the
API-key check): each completion or chat request picks its plan, by ``"steer"`` in its body or by
its model name ``"M:steer=<plan>"``, and runs on a plan slot holding it, with a per-plan prefix-cache
salt, so requests under different plans share the engine's batches and never each other's KV.

Refused before the engine starts, with the reason: ``--steer auto`` (a request has no task), the
engine options ``vllm-steered`` refuses (speculative decoding; dual-batch overlap, KV-sharing fast
prefill, prefill context parallel), and what would put requests beyond the middleware or the slot
pool: data or pipeline parallel, several API server processes, ``--headless``, ``--grpc``, the
Rust front end, ``VLLM_SERVER_DEV_MODE`` (its ``/collective_rpc`` could rewrite plan slots).
It binds to 127.0.0.1 unless ``--host`` says otherwise.

Example:
    >>> options = ServeOptions(model="lape:gemma-3-270m", neurons="lape-top2.safetensors", steer="none")  # doctest: +SKIP
    >>> run(options, ["--max-model-len", "2048", "--port", "8000"])      # serves until interrupted   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from argparse import Namespace

from lape_harness.errors import InputError
from lape_harness.plugin.vllm_serve_plans import MAX_BODY_BYTES, MAX_PLAN_CHARS, PLAN_CACHE, PLAN_SLOTS

logger = logging.getLogger(__name__)

#: the host the server binds to unless ``--host`` is given
DEFAULT_HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """lape-harness's own options of ``serve`` (vLLM's are passed through as its command-line words)."""

    model: str
    neurons: str
    steer: str = "none"
    plan_slots: int = PLAN_SLOTS
    plan_cache: int = PLAN_CACHE
    max_plan_chars: int = MAX_PLAN_CHARS
    max_request_bytes: int = MAX_BODY_BYTES
    allow_other_model: bool = False


def steering_args(options: ServeOptions):
    """The default plan and the neuron set, parsed and checked as ``vllm-steered`` checks them."""
    from lape_harness.plugin.steered_lm import SteeringArgs
    from lape_harness.steering.plan import AutoPlan

    args = SteeringArgs.parse(options.neurons, options.steer, "all", True, options.allow_other_model,
                              scopes=("all",), steer_bos_false=False)
    if isinstance(args.spec, AutoPlan):
        raise InputError(f"--steer {args.spec}: the server's default plan must name its terms (a request has no task "
                         "for auto to read languages from); e.g. --steer=-en+de, or none")
    for name in ("plan_slots", "plan_cache", "max_plan_chars", "max_request_bytes"):
        if getattr(options, name) < (2 if name == "plan_slots" else 1):
            raise InputError(f"--{name.replace('_', '-')} {getattr(options, name)}: give a whole number, at least "
                             f"{2 if name == 'plan_slots' else 1}")
    return args


def vllm_args(options: ServeOptions, argv: list[str]) -> Namespace:
    """vLLM's serve options, read by vLLM's own parser from ``argv``, with the steering settings added
    and every option the server cannot steer refused."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from lape_harness.embedded import resolve_pretrained
    from lape_harness.plugin.vllm_setup import cpu_defaults
    from lape_harness.plugin.vllm_steered import WORKER_EXTENSION, config_dict, refuse_unsteerable_features
    from lape_harness.plugin.vllm_worker import SLOTS_CONFIG

    parser = make_arg_parser(FlexibleArgumentParser(prog="lape-harness serve"))
    model = str(resolve_pretrained(options.model))
    if any(word == "--model" or word.startswith("--model=") for word in argv):
        raise InputError("give the model once, as lape-harness serve --model M")
    args, defaults = parser.parse_args([model, *argv]), parser.parse_args([model])
    args.model = model
    if args.served_model_name is None and model != options.model:
        args.served_model_name = [options.model]
    if args.host is None and args.uds is None:
        args.host = DEFAULT_HOST
    _refuse_unservable(args)
    refuse_unsteerable_features(vars(args), options.plan_slots)
    extension = args.worker_extension_cls or WORKER_EXTENSION
    if extension != WORKER_EXTENSION:
        raise InputError(f"lape-harness serve needs --worker-extension-cls {WORKER_EXTENSION}; remove "
                         f"--worker-extension-cls {extension}")
    args.worker_extension_cls = extension
    args.additional_config = {**config_dict(args.additional_config), SLOTS_CONFIG: options.plan_slots}
    chosen = {} if args.gpu_memory_utilization == defaults.gpu_memory_utilization else \
        {"gpu_memory_utilization": args.gpu_memory_utilization}
    engine = cpu_defaults({**chosen, "tensor_parallel_size": args.tensor_parallel_size})
    args.gpu_memory_utilization = engine.get("gpu_memory_utilization", args.gpu_memory_utilization)
    validate_parsed_serve_args(args)
    return args


def _refuse_unservable(args: Namespace) -> None:
    """What would put requests beyond the middleware or the slot pool, or start engines it cannot reach."""
    import vllm.envs as envs

    problems = {
        "--data-parallel-size > 1 (independent engines, each with slots of its own)": (args.data_parallel_size or 1) > 1,
        "--pipeline-parallel-size > 1 (each stage's workers hold only their layers)": args.pipeline_parallel_size > 1,
        "--api-server-count > 1 (each API process would keep a slot pool of its own)": (args.api_server_count or 1) > 1,
        "--headless (it starts no API server)": bool(args.headless),
        "--grpc (its requests bypass the HTTP middleware)": bool(getattr(args, "grpc", False)),
        "VLLM_USE_RUST_FRONTEND (its requests bypass the Python middleware)": bool(envs.VLLM_USE_RUST_FRONTEND),
        "VLLM_SERVER_DEV_MODE (its /collective_rpc endpoint could rewrite plan slots)": bool(envs.VLLM_SERVER_DEV_MODE),
    }
    refused = [name for name, on in problems.items() if on]
    if refused:
        raise InputError(f"lape-harness serve cannot steer with {'; '.join(refused)}: remove it (one engine, "
                         "tensor parallel, serves mixed plans: --tensor-parallel-size N)")


def check_model(options: ServeOptions, args: Namespace, steering) -> None:
    """The neuron set's recorded model against the served one, before the weights load (as ``vllm-steered``)."""
    from lape_harness.identity import pretrained_identity

    extra = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
    identity = pretrained_identity(options.model, **{key: value for key, value in extra.items() if value})
    if identity is not None and steering.neuron_set is not None:
        steering.neuron_set.check_model(identity, options.allow_other_model, steering.neurons_path)


async def serve(options: ServeOptions, args: Namespace, steering) -> None:
    """Start the engine, run the start-up check, then serve vLLM's app with the steering middleware
    until a signal stops it (vLLM's ``run_server``/``build_and_serve`` with the middleware added)."""
    from starlette.middleware import Middleware
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server

    from lape_harness.plugin.vllm_serve_engine import ServedSteering
    from lape_harness.plugin.vllm_serve_middleware import SteeringMiddleware

    listen_address, sock = setup_server(args, reuse_port=False)  # bound before the engine starts, as vLLM does
    try:
        async with build_async_engine_client(args) as engine:
            served = await ServedSteering.start(engine, steering, options.plan_slots, options.plan_cache,
                                                options.max_plan_chars)
            logger.info("lape-harness serve: start-up check passed (%s); default plan %s, %d plan slots, neurons %s",
                        served.startup_check, served.default, options.plan_slots, steering.neurons_hash)
            supported_tasks = await engine.get_supported_tasks()
            app = build_app(args, supported_tasks, engine.model_config)
            # innermost: after vLLM's CORS and API-key middleware (add_middleware would put it outermost)
            app.user_middleware.append(Middleware(SteeringMiddleware, served=served,
                                                  max_body_bytes=options.max_request_bytes))
            app.middleware_stack = app.build_middleware_stack()  # build_app's SageMaker bootstrap built it already
            _check_steering_in_stack(app.middleware_stack)
            await init_app_state(engine, app.state, args, supported_tasks)
            shutdown = await serve_http(app, sock=sock, **_uvicorn_options(args))
        await shutdown
    finally:
        sock.close()


def _check_steering_in_stack(stack) -> None:
    """The steering middleware must be among the layers a request passes (each layer's ``.app`` is the
    next); else every request would run under the default plan, quietly."""
    from lape_harness.errors import HookNeverFiredError
    from lape_harness.plugin.vllm_serve_middleware import SteeringMiddleware

    layer = stack
    while layer is not None:
        if isinstance(layer, SteeringMiddleware):
            return
        layer = getattr(layer, "app", None)
    raise HookNeverFiredError("lape-harness serve: the steering middleware is not in vLLM's request path (its app "
                              "builds its middleware another way in this vLLM release); requests would run unsteered. "
                              "Report the vLLM version")


def _uvicorn_options(args: Namespace) -> dict:
    """The uvicorn options vLLM's ``build_and_serve`` passes, from the same arguments."""
    import vllm.envs as envs
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config

    options = dict(
        enable_ssl_refresh=args.enable_ssl_refresh, host=args.host, port=args.port,
        log_level=args.uvicorn_log_level, access_log=not args.disable_uvicorn_access_log,
        timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE, ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile, ssl_ca_certs=args.ssl_ca_certs, ssl_cert_reqs=args.ssl_cert_reqs,
        ssl_ciphers=args.ssl_ciphers, h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
        h11_max_header_count=args.h11_max_header_count)
    log_config = get_uvicorn_log_config(args)
    if log_config is not None:
        options["log_config"] = log_config
    return options


def run(options: ServeOptions, argv: list[str]) -> None:
    """Check everything that can be checked before the weights load, then serve (blocks)."""
    import uvloop
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args

    steering = steering_args(options)
    cli_env_setup()
    args = vllm_args(options, argv)
    check_model(options, args, steering)
    configure_logging_from_args(args)
    _log_to_stderr()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvloop.run(serve(options, args, steering))


def _log_to_stderr() -> None:
    """lape-harness's INFO lines (the start-up check, plan loads) beside vLLM's, unless logging is set up."""
    package = logging.getLogger("lape_harness")
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("(lape-harness) %(levelname)s %(asctime)s %(message)s", "%m-%d %H:%M:%S"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
