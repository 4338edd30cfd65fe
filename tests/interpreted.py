"""Running beanq's compiled modules from their Python sources instead.

``make`` (setup.py) compiles the modules listed in beanq/buildinfo.py with mypyc; an extension
module found beside a ``.py`` file is imported in its place. ``use_sources`` puts the sources
first again: the tests do it with ``BEANQ_INTERPRETED=1`` (what runs where there is no C
compiler), and processes that plant bugs by replacing methods do it too, since compiled code
does not look methods up. Kept free of pytest so that such a process can import it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from beanq.buildinfo import COMPILED as HOT_MODULES

REPO = Path(__file__).resolve().parent.parent
BEANQ = REPO / "beanq"


class _SourcesFirst(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, module = name.rpartition(".")
        if package != "beanq" or module not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, BEANQ / f"{module}.py")


def use_sources() -> None:
    """Import the compiled modules from their ``.py`` files from now on."""
    sys.meta_path.insert(0, _SourcesFirst())


# The prelude of a ``python -c`` process that must run the sources.
PRELUDE = (
    f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
    "from tests.interpreted import use_sources\nuse_sources()\n"
)
