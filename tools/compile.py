"""Compile beanq's hot path with mypyc: the codec, the engine, the dispatcher, the server loop
and the binlog, about twice as fast per command as when interpreted (see bench/README.md).

``make`` runs this after installing. The modules stay plain, type-checked Python: an extension
module found beside a ``.py`` file is imported instead of it, and without a C compiler (or on
any build error) beanq simply runs interpreted. ``--clean`` removes the compiled modules.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = [
    "beanq/protocol.py",
    "beanq/tubes.py",
    "beanq/dispatch.py",
    "beanq/server.py",
    "beanq/binlog.py",
]
GROUP = "beanq._compiled"  # the runtime library shared by the modules, inside the package
BUILD = ROOT / "build" / "mypyc"


def clean() -> None:
    for path in (ROOT / "beanq").glob("*.so"):
        path.unlink()
    shutil.rmtree(BUILD, ignore_errors=True)


def compile_modules() -> None:
    import warnings

    from mypyc.build import mypycify
    from setuptools import setup

    # setuptools reads pyproject.toml here too, and calls its [tool.setuptools] table beta
    warnings.filterwarnings("ignore", message=".*tool.setuptools.*")

    setup(
        name="beanq-compiled",
        ext_modules=mypycify(MODULES, opt_level="3", group_name=GROUP, target_dir=str(BUILD)),
        script_args=["-q", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp")],
    )


def main() -> int:
    clean()
    if "--clean" in sys.argv[1:]:
        return 0
    try:
        compile_modules()
    except (Exception, SystemExit) as exc:  # setuptools reports build errors as SystemExit
        clean()
        print(f"beanq: not compiled ({exc}); running interpreted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import os

    os.chdir(ROOT)  # mypyc names modules by their paths relative to here
    sys.exit(main())
