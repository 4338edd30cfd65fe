"""The changes the HTTP console may make to the queue, and nothing else.

Each one is the engine operation a beanstalk command performs (``kick``, ``kick-job``,
``delete``, ``pause-tube``, ``beanq-flush``, ``beanq-move``, ``beanq-schedule-pause``,
``-resume`` and ``-rm``, and drain mode as ``SIGUSR1`` sets it), followed by what the loop
does after a batch of commands: waiting reserves get the jobs it made ready, the binlog
records it like the command's, and with ``-f 0`` the answer waits for the fsync that covers
it. ``beanq.server`` builds this object with that last step (``settle``) and hands it to the
HTTP side, which so never touches the loop, the connections or the binlog. Methods are
coroutines because of that wait; they run on the loop's thread.

The ``cmd-*`` counters of ``stats`` count protocol commands and do not move; the per-tube and
per-job counters (kicks, deletes, pauses) do, as the engine keeps them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from beanq.tubes import Engine, State

if TYPE_CHECKING:
    from beanq.schedules import ScheduleBook

# What flush and move take (as the beanq-flush and beanq-move commands do)
FLUSH_STATES: dict[str, tuple[State, ...]] = {
    "ready": (State.READY,),
    "delayed": (State.DELAYED,),
    "buried": (State.BURIED,),
    "all": (State.READY, State.DELAYED, State.BURIED),
}
MOVE_STATES: dict[str, State] = {
    "ready": State.READY,
    "delayed": State.DELAYED,
    "buried": State.BURIED,
}
MAX_PAUSE = 2**32 - 1  # seconds, as pause-tube takes them
MAX_COUNT = 2**32 - 1  # kick's bound and move's limit, as the commands take them


class Operations:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        settle: Callable[[float], Awaitable[None]],
        set_draining: Callable[[bool], None],
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._settle = settle
        self._set_draining = set_draining

    async def kick(self, tube: bytes, bound: int) -> int | None:
        """``kick bound`` on ``tube``: buried jobs if any, else delayed ones (None: no tube)."""
        found = self._engine.find_tube(tube)
        if found is None:
            return None
        now = self._clock()
        kicked = self._engine.kick_tube(found, min(bound, MAX_COUNT), now)
        await self._settle(now)
        return kicked

    async def kick_job(self, job_id: int) -> bool:
        """``kick-job``: False unless the job is buried or delayed."""
        now = self._clock()
        ok = self._engine.kick_job(job_id, now)
        await self._settle(now)
        return ok

    async def delete(self, job_id: int) -> bool:
        """``delete`` from a connection that holds nothing: False for a reserved job (only its
        holder may delete it) and for a job that does not exist."""
        now = self._clock()
        ok = self._engine.delete(None, job_id, now)
        await self._settle(now)
        return ok

    async def pause(self, tube: bytes, seconds: int) -> bool:
        """``pause-tube``; 0 seconds un-pauses (False: no tube)."""
        now = self._clock()
        ok = self._engine.pause_tube(tube, min(seconds, MAX_PAUSE), now)
        await self._settle(now)
        return ok

    async def flush(self, tube: bytes, state: str) -> int:
        """``beanq-flush``: delete the tube's jobs in ``state`` (a key of FLUSH_STATES)."""
        now = self._clock()
        count = self._engine.flush(tube, FLUSH_STATES[state])
        await self._settle(now)
        return count

    async def move(self, src: bytes, dst: bytes, state: str, limit: int) -> int:
        """``beanq-move``: up to ``limit`` jobs in ``state`` (a key of MOVE_STATES)."""
        now = self._clock()
        count = self._engine.move(src, dst, MOVE_STATES[state], min(limit, MAX_COUNT), now)
        await self._settle(now)
        return count

    async def schedule_pause(self, name: bytes) -> bool:
        """``beanq-schedule-pause`` (False: no such schedule)."""
        return await self._on_schedule(lambda book, now: book.pause(self._engine, name))

    async def schedule_resume(self, name: bytes) -> bool:
        """``beanq-schedule-resume``: its timer armed at the next fire time after now."""
        return await self._on_schedule(lambda book, now: book.resume(self._engine, name, now))

    async def schedule_remove(self, name: bytes) -> bool:
        """``beanq-schedule-rm`` (the jobs it put stay)."""
        return await self._on_schedule(lambda book, now: book.remove(self._engine, name))

    async def _on_schedule(self, change: Callable[[ScheduleBook, float], bool]) -> bool:
        """``change`` made to the schedules, if there are any (False: none, or no such one)."""
        book = self._engine.schedules
        now = self._clock()
        done = book is not None and change(book, now)
        await self._settle(now)
        return done

    async def drain(self, on: bool) -> None:
        """Drain mode (puts answered DRAINING) on, as SIGUSR1 turns it on, or off again."""
        self._set_draining(on)
