"""The request pool: which load runs next, and how many run at once.

Each request has a :class:`RequestType` (INTERACTION > THUMBNAIL > PREFETCH >
COMPUTE) and a numeric priority within its type (lower first, FIFO within a
priority). Two budgets hold at once: a per-type limit, and a shared capacity over
all types. When the shared capacity is contended, the waiting request of the best
type that still has room in its own budget starts first, so an INTERACTION request
is never queued behind PREFETCH work (Cornerstone gives each type an independent
budget; here they share one). A request that has waited ``starvation_seconds`` is
served before newer ones of any type, so low priorities still run eventually.

Slots are granted on waiter futures with a single release step; a waiter cancelled
before or right after its grant leaves the counts exact.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_LIMITS", "RequestPool", "RequestType", "Ticket"]


class RequestType(enum.StrEnum):
    """What a request is for; earlier members are served first."""

    INTERACTION = "interaction"
    THUMBNAIL = "thumbnail"
    PREFETCH = "prefetch"
    COMPUTE = "compute"

    @property
    def rank(self) -> int:
        """0 for INTERACTION up to 3 for COMPUTE."""
        return _RANKS[self]


_RANKS = {t: i for i, t in enumerate(RequestType)}
_BACKGROUND_RANK = _RANKS[RequestType.PREFETCH]

#: Per-type concurrency when none is given. Interaction may use the whole capacity;
#: prefetch and compute leave room so an interactive load starts at once.
DEFAULT_LIMITS: Mapping[RequestType, int] = {
    RequestType.INTERACTION: 24,
    RequestType.THUMBNAIL: 8,
    RequestType.PREFETCH: 8,
    RequestType.COMPUTE: 4,
}
DEFAULT_CAPACITY = 24


class _State(enum.Enum):
    WAITING = 0
    RUNNING = 1
    DONE = 2
    ABANDONED = 3


class Ticket:
    """One request's place in the pool: waiting, then running, then released."""

    __slots__ = ("_future", "_state", "_version", "enqueued_at", "priority", "request_type", "seq")

    def __init__(self, request_type: RequestType, priority: float, seq: int, now: float) -> None:
        self.request_type = request_type
        self.priority = priority
        self.seq = seq
        self.enqueued_at = now
        self._state = _State.WAITING
        self._version = 0
        self._future: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the ticket holds a slot."""
        return self._state is _State.RUNNING

    def __repr__(self) -> str:
        return f"<Ticket {self.request_type.value}/{self.priority} #{self.seq} {self._state.name}>"


class RequestPool:
    """Grants request slots by type, priority and age, within per-type and shared limits."""

    def __init__(
        self,
        limits: Mapping[RequestType | str, int] | None = None,
        *,
        capacity: int | None = None,
        starvation_seconds: float = 5.0,
        yield_to_interaction: bool = True,
    ) -> None:
        merged = dict(DEFAULT_LIMITS)
        for key, value in (limits or {}).items():
            if value < 1:
                raise ValueError(f"request limit for {key} must be >= 1, got {value}")
            merged[RequestType(key)] = int(value)
        self.limits: dict[RequestType, int] = merged
        if capacity is None:
            capacity = max(DEFAULT_CAPACITY, max(merged.values()))
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.starvation_seconds = starvation_seconds
        #: While INTERACTION requests run or wait, PREFETCH and COMPUTE get a quarter
        #: of their limit for new requests (those already running finish).
        self.yield_to_interaction = yield_to_interaction
        self._seq = itertools.count()
        self._running = dict.fromkeys(RequestType, 0)
        self._waiting = dict.fromkeys(RequestType, 0)
        self._total = 0
        self._last_active = dict.fromkeys(RequestType, float("-inf"))
        # Per type: a heap by (priority, seq) for order, and a FIFO for age.
        # Entries go stale when a ticket leaves or is re-prioritised (lazy deletion).
        self._heaps: dict[RequestType, list[tuple[float, int, int, Ticket]]] = {
            t: [] for t in RequestType
        }
        self._fifos: dict[RequestType, collections.deque[Ticket]] = {
            t: collections.deque() for t in RequestType
        }

    # -- introspection ---------------------------------------------------------------
    def running(self, request_type: RequestType | None = None) -> int:
        """Slots held, of one type or in all."""
        return self._total if request_type is None else self._running[request_type]

    def active_within(self, request_type: RequestType, seconds: float) -> bool:
        """Whether requests of a type run or wait now, or did less than ``seconds`` ago.

        Interactive requests come in bursts (a user scrolling): the decode pool keeps
        background work out of the way for the whole burst, not just while one runs.
        """
        if self._running[request_type] or self._waiting[request_type]:
            return True
        now = asyncio.get_running_loop().time()
        return now - self._last_active[request_type] < seconds

    def waiting(self, request_type: RequestType | None = None) -> int:
        """Requests waiting for a slot, of one type or in all."""
        if request_type is None:
            return sum(self._waiting.values())
        return self._waiting[request_type]

    # -- acquire / release -------------------------------------------------------------
    async def acquire(self, request_type: RequestType | str, priority: float = 0) -> Ticket:
        """Wait for a slot; the returned ticket must be given to :meth:`release`."""
        ticket = self.enqueue(request_type, priority)
        await self.wait(ticket)
        return ticket

    def enqueue(self, request_type: RequestType | str, priority: float = 0) -> Ticket:
        """Queue a request and return its ticket at once (it may already hold a slot).

        Pair with :meth:`wait`; holding the ticket while it waits lets a caller
        :meth:`reprioritize` it.
        """
        rtype = RequestType(request_type)
        loop = asyncio.get_running_loop()
        ticket = Ticket(rtype, priority, next(self._seq), loop.time())
        ticket._future = loop.create_future()
        self._enqueue(ticket)
        self._waiting[rtype] += 1
        self._dispatch(loop.time())
        return ticket

    async def wait(self, ticket: Ticket) -> None:
        """Wait until an enqueued ticket holds a slot; cancelling gives up its place."""
        if ticket.running:
            return
        assert ticket._future is not None
        try:
            await ticket._future
        except BaseException:
            if ticket._state is _State.RUNNING:
                # Granted, but cancelled before it could run: hand the slot on.
                self.release(ticket)
            elif ticket._state is _State.WAITING:
                ticket._state = _State.ABANDONED
                self._waiting[ticket.request_type] -= 1
            raise

    def release(self, ticket: Ticket) -> None:
        """Give the slot back (idempotent) and start whoever is next."""
        if ticket._state is not _State.RUNNING:
            return
        ticket._state = _State.DONE
        self._running[ticket.request_type] -= 1
        self._total -= 1
        self._last_active[ticket.request_type] = asyncio.get_running_loop().time()
        if any(self._waiting.values()):
            self._dispatch(asyncio.get_running_loop().time())

    @asynccontextmanager
    async def slot(
        self, request_type: RequestType | str = RequestType.INTERACTION, priority: float = 0
    ) -> AsyncIterator[Ticket]:
        """``async with pool.slot(type, priority):`` holds a slot for the block."""
        ticket = await self.acquire(request_type, priority)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def reprioritize(
        self, ticket: Ticket, request_type: RequestType | str, priority: float = 0
    ) -> bool:
        """Move a waiting ticket up to a better type or priority (never down).

        Used when a second caller awaits a load already queued, e.g. an INTERACTION
        request for an image that a PREFETCH has queued. Returns whether it moved.
        """
        rtype = RequestType(request_type)
        if ticket._state is not _State.WAITING:
            return False
        if (rtype.rank, priority) >= (ticket.request_type.rank, ticket.priority):
            return False
        self._waiting[ticket.request_type] -= 1
        ticket._version += 1
        ticket.request_type = rtype
        ticket.priority = priority
        self._waiting[rtype] += 1
        self._enqueue(ticket)
        self._dispatch(asyncio.get_running_loop().time())
        return True

    # -- internals ---------------------------------------------------------------------
    def _enqueue(self, ticket: Ticket) -> None:
        rtype = ticket.request_type
        heapq.heappush(self._heaps[rtype], (ticket.priority, ticket.seq, ticket._version, ticket))
        self._fifos[rtype].append(ticket)

    def _live(self, ticket: Ticket, rtype: RequestType) -> bool:
        return ticket._state is _State.WAITING and ticket.request_type is rtype

    def _head(self, rtype: RequestType) -> Ticket | None:
        heap = self._heaps[rtype]
        while heap:
            _, _, version, ticket = heap[0]
            if self._live(ticket, rtype) and version == ticket._version:
                return ticket
            heapq.heappop(heap)
        return None

    def _oldest(self, rtype: RequestType) -> Ticket | None:
        fifo = self._fifos[rtype]
        while fifo:
            ticket = fifo[0]
            if self._live(ticket, rtype):
                return ticket
            fifo.popleft()
        return None

    def _has_room(self, rtype: RequestType) -> bool:
        limit = self.limits[rtype]
        if rtype.rank >= _BACKGROUND_RANK and self.yield_to_interaction:
            interactive = (
                self._running[RequestType.INTERACTION] + self._waiting[RequestType.INTERACTION]
            )
            if interactive:
                # Someone is looking: background work keeps going, but slower, so the
                # server and the cores answer the interactive request first.
                limit = max(1, limit // 4)
        return self._running[rtype] < limit

    def _next(self, now: float) -> Ticket | None:
        # Starved requests first (oldest among them), then by type and priority.
        starved: Ticket | None = None
        deadline = now - self.starvation_seconds
        for rtype in RequestType:
            if not self._waiting[rtype] or not self._has_room(rtype):
                continue
            oldest = self._oldest(rtype)
            if (
                oldest is not None
                and oldest.enqueued_at <= deadline
                and (starved is None or oldest.seq < starved.seq)
            ):
                starved = oldest
        if starved is not None:
            return starved
        for rtype in RequestType:
            if self._waiting[rtype] and self._has_room(rtype):
                head = self._head(rtype)
                if head is not None:
                    return head
        return None

    def _dispatch(self, now: float) -> None:
        while self._total < self.capacity:
            ticket = self._next(now)
            if ticket is None:
                return
            rtype = ticket.request_type
            ticket._state = _State.RUNNING
            self._waiting[rtype] -= 1
            self._running[rtype] += 1
            self._total += 1
            assert ticket._future is not None
            if not ticket._future.done():
                ticket._future.set_result(None)
