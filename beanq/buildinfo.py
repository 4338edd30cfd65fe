"""Which of beanq's modules the build compiles with mypyc, and whether this process runs them.

``setup.py`` reads ``COMPILED`` and ``GROUP`` from this file by path (it runs before beanq is
installed), so the list lives once, here, beside the modules; ``beanq --version``, ``-V`` and
the ``version`` field of ``stats`` say what ``build()`` finds, because an interpreted build
costs about twice the CPU per command and an operator should not have to guess which one runs.
Nothing here imports beyond the standard library: ``--version`` stays as quick as ``-h``.
"""

from __future__ import annotations

import sys

# The hot path: the codec, the engine, the dispatcher, the server loop and the binlog; and
# schedules (a fire is a put the server makes itself: ten thousand a second must cost little).
COMPILED = ("protocol", "tubes", "dispatch", "server", "binlog", "schedules")
GROUP = "beanq._compiled"  # mypyc's runtime library shared by the modules, inside the package


def _is_compiled(name: str) -> bool:
    module = sys.modules.get(f"beanq.{name}")
    if module is not None:
        origin = getattr(module, "__file__", None)
    else:
        import importlib.util

        spec = importlib.util.find_spec(f"beanq.{name}")  # where it would come from, unloaded
        origin = spec.origin if spec is not None else None
    return origin is not None and not origin.endswith(".py")


def interpreted_modules() -> list[str]:
    """The hot modules that run (or would be imported) from their ``.py`` source."""
    return [name for name in COMPILED if not _is_compiled(name)]


def build() -> str:
    """One word for ``stats``' ``version`` (``beanq-0.1.0+mypyc``): ``mypyc`` when every hot
    module is compiled, ``interpreted`` when none is, ``mixed`` otherwise (a half-built tree, or
    a test that put some sources first)."""
    slow = interpreted_modules()
    if not slow:
        return "mypyc"
    return "interpreted" if len(slow) == len(COMPILED) else "mixed"


def describe() -> str:
    """The build in words, for ``--version`` and the start-up log."""
    slow = interpreted_modules()
    if not slow:
        return "compiled with mypyc"
    if len(slow) == len(COMPILED):
        return "interpreted: no compiled modules, each command costs about twice the CPU"
    return f"partly compiled: {', '.join(slow)} interpreted"
