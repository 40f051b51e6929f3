"""How many calls one worker takes at once (SWITCHBOARD_WORKER_MAX_CALLS).

Every call on a worker shares one event loop. Past what its core can carry, the loop runs late
and every call's audio is late with it: one call too many degrades all of them. So a worker at
capacity refuses new calls instead — the webhook is answered busy before the control plane is
asked to issue anything, and `/readyz` says 503 so a load balancer sends new calls elsewhere.

A place is taken when a webhook is admitted, held while the phone provider opens the stream (at
most `hold_seconds`), and kept while the call is bridged. A stream for a call that was issued is
always bridged, even on a full worker (its webhook may have been admitted by another replica):
refusing it would drop a caller who has already been answered.

A worker that is stopping (`begin_stopping`, on SIGTERM with a drain time) takes no new calls
but still owes the streams of the calls it answered (`streams_owed`): the server keeps
listening for them (`serving.SwitchboardServer`). A stream that has arrived stays owed until
its call is bridged (`bridged`): while its token is redeemed and its session set up, the server
has not yet been told how to end the call, and would close the stream as if the caller had hung up.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CallCapacity:
    def __init__(
        self,
        limit: int | None,
        hold_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.hold_seconds = hold_seconds
        self.clock = clock
        self.refused = 0
        self.refused_stopping = 0
        self.stopping = False
        self._taken = 0  # places taken by a block (a webhook being answered, a browser call)
        self._held: dict[str, float] = {}  # issued call → until when its stream is waited for
        self._running: dict[str, int] = {}  # bridged call → how many streams carry it

    @property
    def in_use(self) -> int:
        self._forget_expired_holds()
        waiting = sum(1 for call_id in self._held if call_id not in self._running)
        return self._taken + waiting + len(self._running)

    def has_room(self) -> bool:
        return not self.stopping and (self.limit is None or self.in_use < self.limit)

    def begin_stopping(self) -> None:
        """From now on every new call is refused; streams of issued calls are still bridged."""
        self.stopping = True

    @property
    def streams_owed(self) -> int:
        """Calls issued here not bridged yet (and whose hold has not run out)."""
        self._forget_expired_holds()
        return len(self._held)

    def count_refusal(self) -> None:
        if self.stopping:
            self.refused_stopping += 1
        else:
            self.refused += 1

    @contextmanager
    def taken(self) -> Iterator[bool]:
        """One place for as long as the block runs; False (and counted as refused) when the
        worker is full or stopping."""
        if not self.has_room():
            self.count_refusal()
            yield False
            return
        self._taken += 1
        try:
            yield True
        finally:
            self._taken -= 1

    def hold(self, call_id: str) -> None:
        """An issued call's place, kept until its stream arrives or `hold_seconds` pass."""
        self._held[call_id] = self.clock() + self.hold_seconds

    @contextmanager
    def running(self, call_id: str) -> Iterator[None]:
        """The call's stream is here, for as long as the block runs; its place is freed after."""
        self._running[call_id] = self._running.get(call_id, 0) + 1
        try:
            yield
        finally:
            self._held.pop(call_id, None)
            left = self._running.pop(call_id) - 1
            if left:
                self._running[call_id] = left

    def bridged(self, call_id: str) -> None:
        """The call's audio flows, on a stream that knows how to end the call if the server
        stops: its stream is no longer owed."""
        self._held.pop(call_id, None)

    def _forget_expired_holds(self) -> None:
        now = self.clock()
        for call_id in [c for c, until in self._held.items() if until <= now]:
            del self._held[call_id]


class PreStartSockets:
    """Sockets that have not shown a stream token yet: a media stream before its `start`, a
    browser call before its token. They hold no call place (a call place is for a call the
    control plane issued); they have a bound of their own, per worker and per client address,
    so anonymous sockets cannot crowd out calls or exhaust the worker.

    Past `per_address` from one address, another is refused. Past `limit` in all, the oldest is
    closed to make room: a real stream shows its token within milliseconds of opening, so the
    sockets that have waited longest are the ones that will never show one."""

    def __init__(self, limit: int, per_address: int) -> None:
        self.limit = limit
        self.per_address = per_address
        self.refused = 0
        self.evicted = 0
        self._waiting: dict[object, tuple[str, Callable[[], None]]] = {}  # oldest first
        self._by_address: dict[str, int] = {}

    @property
    def waiting_now(self) -> int:
        return len(self._waiting)

    @contextmanager
    def waiting(self, address: str, evict: Callable[[], None]) -> Iterator[bool]:
        """A place to wait for the token in, for as long as the block runs; False when this
        address has too many already. `evict` is called if the socket must make room."""
        if self._by_address.get(address, 0) >= self.per_address:
            self.refused += 1
            yield False
            return
        if len(self._waiting) >= self.limit:
            oldest = next(iter(self._waiting))
            self._forget(oldest)[1]()
            self.evicted += 1
        key = object()
        self._waiting[key] = (address, evict)
        self._by_address[address] = self._by_address.get(address, 0) + 1
        try:
            yield True
        finally:
            if key in self._waiting:
                self._forget(key)

    def _forget(self, key: object) -> tuple[str, Callable[[], None]]:
        address, evict = self._waiting.pop(key)
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]
        return address, evict
