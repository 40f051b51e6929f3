"""How fast this host runs right now: a fixed piece of work that every benchmark times first.

The machine is shared, so the same code takes longer at one moment than at another. A result
file carries this figure, and runs from different moments compare by it (a run whose reference
is twice as slow ran on a host twice as busy), not by the clock on the wall.
"""

import asyncio
import base64
import gc
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

_FRAME = json.dumps(
    {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(bytes([0x7F]) * 160).decode()},
    }
)
_json_string = json.encoder.encode_basestring
_event_ids = itertools.count(1)


@dataclass(frozen=True)
class _Media:
    payload: str


def _caller_audio(frame: dict[str, Any]) -> _Media | None:
    return _media(frame) if frame.get("event") == "media" else None


def _media(frame: dict[str, Any]) -> _Media | None:
    media = frame.get("media")
    if not isinstance(media, dict) or media.get("track", "inbound") not in (
        "inbound",
        "inbound_track",
    ):
        return None
    payload = media.get("payload")
    if not isinstance(payload, str) or not payload:
        return None
    base64.b64decode(payload, validate=True)
    return _Media(payload)


def _event_id() -> str:
    return f"evt_sb_{next(_event_ids)}"


def _append(payload: str) -> str:
    audio = _json_string(payload)
    return f'{{"type":"input_audio_buffer.append","event_id":"{_event_id()}","audio":{audio}}}'


def host_reference_us() -> float:
    """A media frame's work as the worker did it until 2026-12-07, kept here as it was (so that
    making the worker faster does not make the host look quieter): a Twilio media frame parsed
    and its base64 checked, an xAI append written from it; process CPU time, median of 5 rounds
    of 20,000, in µs per frame."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(20_000):
            media = _caller_audio(json.loads(_FRAME))
            assert media is not None
            _append(media.payload)
        rounds.append((time.process_time() - started) / 20_000 * 1e6)
    return statistics.median(rounds)


@dataclass(frozen=True)
class Case:
    """One row of an in-process benchmark: `step` does one unit of work; `done` counts the
    units that had their effect (a write), so a round that skipped some is caught."""

    step: Callable[[], object]
    done: Callable[[], int]


async def time_rounds(
    cases: dict[str, Case], per_round: int, rounds: int
) -> dict[str, list[float]]:
    """µs of process CPU per unit, per round, for each case (rounds interleaved, a collection
    before each, and the loop's own turn after each, as in a server)."""
    costs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            gc.collect()
            done = case.done()
            started = time.process_time()
            for _ in range(per_round):
                case.step()
            elapsed = time.process_time() - started
            if case.done() - done != per_round:
                raise SystemExit(f"{name}: {case.done() - done} of {per_round} had their effect")
            costs[name].append(elapsed / per_round * 1e6)
            await asyncio.sleep(0)
    return costs


def report_rounds(name: str, unit: str, costs: dict[str, list[float]], per_round: int) -> None:
    """Print an in-process benchmark's µs per `unit` (min and median of its rounds, each row)
    with the host reference, and keep them in bench/results/NAME.json for `make bench-report`."""
    host_us = host_reference_us()
    print(f"host reference (bench/host.py): {host_us:.2f} us")
    rounds_run = len(next(iter(costs.values())))
    width = max(16, *(len(row) + 2 for row in costs))
    print(f"{unit:<{width}}{'min us':>10}{'median us':>12}   ({rounds_run} rounds of {per_round})")
    for row, rounds in costs.items():
        print(f"{row:<{width}}{min(rounds):>10.2f}{statistics.median(rounds):>12.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "host_reference_us": host_us,
                f"{unit}s_per_round": per_round,
                "rounds_us": costs,
                "min_us": {row: min(rounds) for row, rounds in costs.items()},
                "median_us": {row: statistics.median(rounds) for row, rounds in costs.items()},
            },
            indent=2,
            ensure_ascii=False,
        )
    )
