"""A worker's call capacity: places taken by webhooks being answered, held for issued calls
until their stream arrives (or the hold runs out), kept while calls are bridged."""

from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from tests.clock import Clock


def test_a_full_worker_refuses_and_counts_the_refusal() -> None:
    capacity = CallCapacity(2, hold_seconds=15, clock=Clock(100.0))
    with capacity.taken() as first, capacity.taken() as second, capacity.taken() as third:
        assert (first, second, third) == (True, True, False)
        assert capacity.in_use == 2
        assert not capacity.has_room()
    assert capacity.refused == 1
    assert capacity.in_use == 0  # a refused block took nothing, and the others gave theirs back


def test_an_issued_call_keeps_its_place_until_its_stream_comes_or_the_hold_runs_out() -> None:
    clock = Clock(100.0)
    capacity = CallCapacity(1, hold_seconds=15, clock=clock)
    capacity.hold("call-a")
    assert not capacity.has_room()
    clock.now += 14.9
    assert not capacity.has_room()
    clock.now += 0.2  # no stream came: the place comes back
    assert capacity.has_room()
    assert capacity.in_use == 0


def test_a_bridged_call_holds_its_place_until_it_ends_and_the_hold_is_not_counted_twice() -> None:
    clock = Clock(100.0)
    capacity = CallCapacity(2, hold_seconds=15, clock=clock)
    capacity.hold("call-a")
    with capacity.running("call-a"):
        assert capacity.in_use == 1
        clock.now += 3600  # long past the hold: a running call keeps its place
        assert capacity.in_use == 1
    assert capacity.in_use == 0


def test_a_stream_for_a_call_this_worker_did_not_admit_is_counted_even_when_full() -> None:
    capacity = CallCapacity(1, hold_seconds=15, clock=Clock(100.0))
    with capacity.running("call-a"), capacity.running("call-b"):
        assert capacity.in_use == 2  # never refused: the caller has been answered already
        with capacity.taken() as admitted:
            assert not admitted


def test_a_place_is_given_back_when_the_block_fails() -> None:
    capacity = CallCapacity(1, hold_seconds=15, clock=Clock(100.0))
    for block in (capacity.taken, lambda: capacity.running("call-a")):
        try:
            with block():
                assert capacity.in_use == 1
                raise RuntimeError("the call failed")
        except RuntimeError:
            pass
        assert capacity.in_use == 0


def test_without_a_limit_there_is_always_room() -> None:
    capacity = CallCapacity(None, hold_seconds=15, clock=Clock(100.0))
    for index in range(1000):
        capacity.hold(f"call-{index}")
    with capacity.taken() as admitted:
        assert admitted
    assert capacity.refused == 0


def test_a_stopping_worker_refuses_new_calls_and_still_owes_the_streams_it_answered() -> None:
    clock = Clock(100.0)
    capacity = CallCapacity(None, hold_seconds=15, clock=clock)
    capacity.hold("call-a")
    capacity.hold("call-b")
    capacity.begin_stopping()
    with capacity.taken() as admitted:
        assert not admitted
    assert (capacity.refused_stopping, capacity.refused) == (1, 0)
    assert capacity.streams_owed == 2
    with capacity.running("call-a"):  # its stream came, its token is being redeemed
        assert capacity.streams_owed == 2
        assert capacity.in_use == 2  # the hold and the running call are one place
        capacity.bridged("call-a")
        assert capacity.streams_owed == 1
    with capacity.running("call-b"):  # its stream came, and the call was refused
        pass
    assert capacity.streams_owed == 0
    capacity.hold("call-b")
    clock.now += 15.1  # call-b's stream never came: nothing is owed after its hold
    assert capacity.streams_owed == 0


def test_sockets_before_a_token_are_bounded_per_address() -> None:
    gate = PreStartSockets(limit=10, per_address=2)
    with (
        gate.waiting("198.51.100.7", lambda: None) as first,
        gate.waiting("198.51.100.7", lambda: None) as second,
        gate.waiting("198.51.100.7", lambda: None) as third,
        gate.waiting("203.0.113.9", lambda: None) as elsewhere,
    ):
        assert (first, second, third, elsewhere) == (True, True, False, True)
        assert gate.waiting_now == 3
    assert gate.refused == 1 and gate.waiting_now == 0


def test_past_the_worker_bound_the_oldest_socket_before_a_token_is_closed() -> None:
    gate = PreStartSockets(limit=2, per_address=10)
    closed: list[str] = []
    with (
        gate.waiting("a", lambda: closed.append("oldest")),
        gate.waiting("b", lambda: closed.append("second")),
        gate.waiting("c", lambda: closed.append("newest")) as newest,
    ):
        assert newest and closed == ["oldest"]
        assert gate.waiting_now == 2 and gate.evicted == 1
    assert gate.waiting_now == 0  # the evicted one's block ended without counting twice
