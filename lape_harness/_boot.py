"""Start-up hook that lets a plain ``lm_eval`` see lape-harness: standard library only.

``pip install lape-harness`` puts ``lape_harness.pth`` into site-packages; Python runs its one line
at every start-up (also in processes that ``accelerate launch`` and ``torchrun`` start), and that
line imports this module. It only puts a finder on ``sys.meta_path``: torch and lm_eval are not
imported. When a program later imports lm_eval's registry or task manager, the finder lets the
module execute as usual and then hands it to :mod:`lape_harness.plugin.registration`, which registers
both models, ``hf-steered`` and ``vllm-steered`` (as lazy targets: their modules are imported only
when lm-eval builds one), and this project's task folder. A failure there warns once and leaves lm_eval as it is.

Set ``LAPE_HARNESS_DISABLE_PLUGIN=1`` to switch the hook off without uninstalling.

Example (what the ``.pth`` line does)::

    >>> import lape_harness._boot
    >>> lape_harness._boot.install()   # idempotent; returns at once
"""

import os
import sys

#: lm_eval module name -> function of lape_harness.plugin.registration called right after it executes.
HOOKS = {
    "lm_eval.api.registry": "on_registry",
    "lm_eval.tasks.manager": "on_task_manager",
}
DISABLE_VARIABLE = "LAPE_HARNESS_DISABLE_PLUGIN"

_warned = False


class _HookedLoader:
    """Delegates to the module's own loader, then runs the lape-harness hook on the executed module."""

    def __init__(self, loader, hook: str):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        run_hook(self._hook, module)

    def __getattr__(self, name):  # get_source, get_filename, get_resource_reader, ...
        return getattr(self._loader, name)


class LmEvalFinder:
    """Finds the hooked lm_eval modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        hook = HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, hook)
                return spec
        return None


def run_hook(hook: str, module) -> None:
    """Call ``lape_harness.plugin.registration.<hook>(module)``; any failure becomes one warning."""
    try:
        from lape_harness.plugin import registration

        getattr(registration, hook)(module)
    except Exception as error:  # a plugin must never break lm_eval
        warn_once(f"lape-harness could not register with lm_eval ({type(error).__name__}: {error}); "
                  f"`--model hf-steered`, `--model vllm-steered` and the lape_ tasks are unavailable in this process. "
                  f"Reinstall with `pip install --force-reinstall --no-deps lape-harness`, or set "
                  f"{DISABLE_VARIABLE}=1 to run lm_eval without lape-harness.")


def warn_once(message: str) -> None:
    """Emit ``message`` as a RuntimeWarning (``lape-harness: RuntimeWarning: ...``) the first time only."""
    global _warned
    if not _warned:
        import warnings

        _warned = True
        warnings.warn_explicit(message, RuntimeWarning, filename="lape-harness", lineno=0)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once; a no-op when disabled by the variable)."""
    if os.environ.get(DISABLE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    if any(isinstance(finder, LmEvalFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, LmEvalFinder())
    already = [name for name in HOOKS if name in sys.modules]
    for name in already:  # lm_eval imported before us (unusual): patch it now
        run_hook(HOOKS[name], sys.modules[name])
