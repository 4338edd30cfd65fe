"""Which build of beanq's hot modules the tests run: compiled (``make`` builds it with mypyc
through setup.py) or, with ``BEANQ_INTERPRETED=1``, the plain Python sources, which is what
runs where no C compiler is. ``make test`` runs the in-process tests both ways."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.interpreted import BEANQ, HOT_MODULES, use_sources


def _compiled(module: str) -> list[Path]:
    return list(BEANQ.glob(f"{module}.*.so"))


if os.environ.get("BEANQ_INTERPRETED"):
    use_sources()
else:
    stale = [
        m
        for m in HOT_MODULES
        if any(so.stat().st_mtime < (BEANQ / f"{m}.py").stat().st_mtime for so in _compiled(m))
    ]
    if stale:
        pytest.exit(
            f"compiled beanq modules are older than their sources ({', '.join(stale)}): "
            "run `make test` (or `make .venv/.compiled`)",
            returncode=2,
        )


def pytest_report_header() -> str:
    import beanq.tubes

    compiled = not beanq.tubes.__file__ or not beanq.tubes.__file__.endswith(".py")
    return f"beanq hot modules: {'compiled (mypyc)' if compiled else 'interpreted'}"


# No wall-clock assumption in property tests: on a busy machine any example can be slow, and a
# deadline turned that into a failure, whose explain phase (tracing every line) then ran for
# minutes. Sizes are bounded by example counts, never by time.
settings.register_profile(
    "beanq",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[phase for phase in Phase if phase is not Phase.explain],
)
settings.load_profile("beanq")


_SESSION_STARTED = [0.0]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"


def pytest_sessionstart(session: pytest.Session) -> None:
    import time

    _SESSION_STARTED[0] = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the folder of the console's screenshots (tests/test_console.py) taken this run."""
    if not SCREENSHOTS.is_dir():
        return
    taken = [p for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= _SESSION_STARTED[0]]
    if taken:
        terminalreporter.write_sep("-", "console screenshots")
        terminalreporter.write_line(f"{len(taken)} screenshots in {SCREENSHOTS}")
