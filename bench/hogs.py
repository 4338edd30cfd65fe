"""A busy machine on demand: one spinning process per core, as a load test or another CI job
running beside the server would be. Used by the start-up rows of ``make bench`` and by the
start-up tests, which must hold on a busy machine too."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event


def _spin(stop: Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def cpu_hogs() -> Iterator[None]:
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    hogs = [
        context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 2)
    ]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(0.2)  # let them take the cores
        yield
    finally:
        stop.set()
        for hog in hogs:
            hog.join(5)
            if hog.is_alive():
                hog.kill()
