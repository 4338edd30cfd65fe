"""Which build of beanq's hot modules the tests run: compiled (``make`` builds it with mypyc,
see tools/compile.py) or, with ``BEANQ_INTERPRETED=1``, the plain Python sources, which is what
runs where no C compiler is. ``make test`` runs the in-process tests both ways."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

BEANQ = Path(__file__).resolve().parent.parent / "beanq"
HOT_MODULES = ("protocol", "tubes", "dispatch", "server", "binlog")


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Import the hot modules from their ``.py`` files even where a compiled one is beside."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, module = name.rpartition(".")
        if package != "beanq" or module not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, BEANQ / f"{module}.py")


def _compiled(module: str) -> list[Path]:
    return list(BEANQ.glob(f"{module}.*.so"))


if os.environ.get("BEANQ_INTERPRETED"):
    sys.meta_path.insert(0, _SourcesFirst())
else:
    stale = [
        m
        for m in HOT_MODULES
        if any(so.stat().st_mtime < (BEANQ / f"{m}.py").stat().st_mtime for so in _compiled(m))
    ]
    if stale:
        pytest.exit(
            f"compiled beanq modules are older than their sources ({', '.join(stale)}): "
            "run `make test` (or `.venv/bin/python tools/compile.py`)",
            returncode=2,
        )


def pytest_report_header() -> str:
    import beanq.tubes

    compiled = not beanq.tubes.__file__ or not beanq.tubes.__file__.endswith(".py")
    return f"beanq hot modules: {'compiled (mypyc)' if compiled else 'interpreted'}"
