"""The one way beanq is built: its hot path compiled with mypyc where a C compiler is, plain
Python where not.

Every route comes through here: ``pip install beanq`` from the sdist, ``pip install .``,
``pip wheel .``, ``python -m build``, and ``make`` (``python setup.py build_ext --inplace``
after an editable install). The metadata is in pyproject.toml; this file only adds the
extension modules, because the same type-checked sources run about twice as fast per command
once mypyc has turned them into C (see bench/README.md).

A build without a C compiler and Python's headers, without mypy (``--no-build-isolation``), or
with ``BEANQ_PURE=1`` in the environment makes a pure wheel, after a one-line notice: beanq
then runs interpreted, and ``beanq --version`` says so. The client (``beanq_client``) is pure
Python in either wheel. A compiler that is there but fails gives the same notice and the same
pure result rather than no install at all.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

ROOT = Path(__file__).resolve().parent
INFO = runpy.run_path(str(ROOT / "beanq" / "buildinfo.py"))  # beanq is not importable yet
BUILD = Path("build") / "mypyc"  # mypyc's generated C, kept between builds of this tree
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def _notice(reason: str) -> None:
    print(f"beanq: building without mypyc ({reason}); beanq will run interpreted", file=sys.stderr)


def _missing_toolchain() -> str | None:
    """Why no C extension can be built here, or None. Checked up front so that a machine
    without a compiler gets a pure (``py3-none-any``) wheel rather than a failed build."""
    if os.environ.get("BEANQ_PURE"):
        return "BEANQ_PURE is set"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not compiler or shutil.which(compiler[0]) is None:
        return f"no C compiler ({compiler[0] if compiler else 'cc'})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python.h: install the Python development headers"
    return None


def _builds_code() -> bool:
    """Whether this run builds anything: pip asks for metadata (``egg_info``, ``dist_info``)
    and ``sdist`` packs sources, and neither should wait a minute for mypyc."""
    return bool(BUILD_COMMANDS.intersection(sys.argv[1:]))


def _extensions() -> list[Any]:
    if not _builds_code():
        return []
    reason = _missing_toolchain()
    if reason is not None:
        _notice(reason)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _notice("mypy is not installed")
        return []
    os.chdir(ROOT)  # mypyc names the modules by their paths relative to here
    sources = [f"beanq/{name}.py" for name in INFO["COMPILED"]]
    # The compiled modules are checked in full; what they import and are not (beanq.http and
    # its optional stack, absent from a build environment) is read for types only.
    options = ["--follow-imports=silent"]
    try:
        extensions: list[Any] = mypycify(
            [*options, *sources], opt_level="3", group_name=INFO["GROUP"], target_dir=str(BUILD)
        )
    except (Exception, SystemExit) as exc:  # mypy reports type errors as SystemExit
        _notice(f"mypyc failed: {type(exc).__name__}, see above")
        return []
    return extensions


# The compiled modules are one C file whose functions call each other a great deal (the
# dispatcher into the engine, the engine into its helpers). A shared library's exported
# functions are called through the PLT and never inlined, in case another library replaces them
# at load time; nothing replaces these, and without that caution the C compiler may inline them
# (CPython is built the same way): about 2 % less CPU per put, measured.
DIRECT_CALLS = "-fno-semantic-interposition"


class BuildExt(build_ext):  # type: ignore[misc]
    """build_ext that falls back to the pure modules when the compiler itself fails (the
    wheel keeps its platform tag then: the tag is settled before anything compiles)."""

    def build_extensions(self) -> None:
        if self._accepts(DIRECT_CALLS):
            for extension in self.extensions:
                extension.extra_compile_args.append(DIRECT_CALLS)
        super().build_extensions()

    def _accepts(self, flag: str) -> bool:
        """Whether the C compiler takes ``flag`` (GCC 5 and clang 9 on do)."""
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.c"
            probe.write_text("int probe(void) { return 0; }\n")
            try:
                self.compiler.compile([str(probe)], output_dir=tmp, extra_postargs=[flag])
            except CompileError:
                return False
        return True

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.extensions: list[Any] = []
            _notice(f"the C build failed: {type(exc).__name__}, see above")


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
