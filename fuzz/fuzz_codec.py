"""Coverage-guided fuzzing of beanq's pure half (codec, dispatcher, engine) with atheris.

    .venv/bin/python fuzz/fuzz_codec.py [libFuzzer flags] [CORPUS_DIR ...]
    .venv/bin/python fuzz/fuzz_codec.py -max_total_time=300 fuzz/corpus
    .venv/bin/python fuzz/fuzz_codec.py fuzz/crashes/crash-1234abcd   # replay one input

No sockets, no clock, no trio: each input is decoded into one of two programs, and the
properties checked are those of ``tests/test_hardening.py`` (the same functions run here):

* codec: a byte stream, the positions where reads cut it, and a maximum job size, for
  ``check_codec`` (split-invariance, only beanstalkd's error replies, bounded buffering);
* hub: up to 64 steps (bytes to one of three connections, the clock moving on, a half-close,
  a hang-up) for ``HubDriver``, which runs a ``Hub`` on an ``Engine`` as the server's loop
  does and checks every reply, that no command ends in INTERNAL_ERROR or a logged exception,
  the job accounting, and the engine's invariants (``engine_problems``) after every step.

A failed check is an uncaught exception: libFuzzer stops and writes the input to
``-artifact_prefix`` (``fuzz/crashes/`` by default). The dictionary ``fuzz/beanstalk.dict``
(protocol words) is passed unless ``-dict=`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: beanq, and tests for the checks

with atheris.instrument_imports(include=["beanq"]):
    import beanq.dispatch
    import beanq.protocol
    import beanq.tubes  # noqa: F401

from tests.test_hardening import TOKENS, HubDriver, Op, check_codec  # noqa: E402

MAX_JOB_SIZES = (0, 3, 16, 300, 65535)
SECONDS = (0.0, 0.25, 1.0, 1.5, 2.0, 5.0, 61.0, 5000.0)
MAX_STEPS = 64


def decode_ops(fdp: atheris.FuzzedDataProvider) -> list[Op]:
    ops: list[Op] = []
    while fdp.remaining_bytes() and len(ops) < MAX_STEPS:
        kind = fdp.ConsumeIntInRange(0, 9)
        conn = fdp.ConsumeIntInRange(0, 2)
        if kind < 3:  # whole protocol pieces, so that deep states are near
            count = fdp.ConsumeIntInRange(1, 4)
            data = b"".join(TOKENS[fdp.ConsumeIntInRange(0, len(TOKENS) - 1)] for _ in range(count))
            ops.append(Op("feed", conn, data))
        elif kind < 6:  # raw bytes
            ops.append(Op("feed", conn, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))))
        elif kind < 8:
            ops.append(Op("advance", seconds=SECONDS[fdp.ConsumeIntInRange(0, len(SECONDS) - 1)]))
        elif kind == 8:
            ops.append(Op("eof", conn))
        else:
            ops.append(Op("close", conn))
    return ops


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 1)
    max_job_size = MAX_JOB_SIZES[fdp.ConsumeIntInRange(0, len(MAX_JOB_SIZES) - 1)]
    if target == 0:
        cuts = [fdp.ConsumeIntInRange(0, 1024) for _ in range(fdp.ConsumeIntInRange(0, 8))]
        check_codec(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts, max_job_size)
    else:
        HubDriver(max(max_job_size, 3)).run(decode_ops(fdp))


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-dict=") for a in args):
        args.insert(1, f"-dict={HERE / 'beanstalk.dict'}")
    if not any(a.startswith("-artifact_prefix=") for a in args):
        crashes = HERE / "crashes"
        crashes.mkdir(exist_ok=True)
        args.insert(1, f"-artifact_prefix={crashes}/")
    if not any(a.startswith("-max_len=") for a in args):
        args.insert(1, "-max_len=4096")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
