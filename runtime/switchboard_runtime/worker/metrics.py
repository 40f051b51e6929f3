"""The worker's /metrics, exposed by prometheus-client from one registry per worker app.

Most figures already live in the worker's own objects (warm sessions, call places, sockets
waiting for a stream token), so a collector reads them at scrape time instead of mirroring every
change into a second counter. The two histograms are prometheus-client's own: event-loop lag,
observed on the loop every 100 ms (a setting), and garbage-collection pauses, moved from the
collector's lock-free queue into the histogram by `drain_gc_pauses` (on each lag sample and each
scrape).
"""

from collections import Counter
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import State

from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.loop_lag import BUCKETS, GcPauses
from switchboard_runtime.warm import WarmSessions
from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from switchboard_runtime.worker.media_plane import REFUSAL_REASONS, MediaPlane
from switchboard_runtime.worker.native_relays import AudioFrames

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def counter_by(name: str, help_text: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A counter with one series per key of `counts`, labelled `label`."""
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


class WorkerState(Collector):
    """Counters and gauges read from the worker app's live objects when scraped (read from the
    app's state each time, as every route does)."""

    def __init__(self, app_state: State) -> None:
        self.app_state = app_state

    def collect(self) -> Iterator[Metric]:
        warm: WarmSessions | None = getattr(self.app_state, "warm", None)  # from start-up on
        capacity: CallCapacity = self.app_state.capacity
        pre_start: PreStartSockets = self.app_state.pre_start
        call_starts: Counter[str] = self.app_state.call_starts
        if warm is not None:
            yield counter_by(
                "switchboard_worker_warm_sessions",
                "Warm sessions by outcome.",
                "outcome",
                warm.counts,
            )
            yield GaugeMetricFamily(
                "switchboard_worker_warm_sessions_open",
                "Warm sessions waiting for their stream.",
                value=warm.open,
            )
        yield counter_by(
            "switchboard_worker_call_starts",
            "Calls bridged, by how they started.",
            "path",
            call_starts,
        )
        yield GaugeMetricFamily(
            "switchboard_worker_calls",
            "Calls holding a place on this worker.",
            value=capacity.in_use,
        )
        if capacity.limit is not None:
            yield GaugeMetricFamily(
                "switchboard_worker_max_calls",
                "Calls this worker takes at once.",
                value=capacity.limit,
            )
        yield counter_by(
            "switchboard_worker_calls_refused",
            "Calls refused: worker at capacity or stopping.",
            "reason",
            {"at_capacity": capacity.refused, "stopping": capacity.refused_stopping},
        )
        audio_frames: AudioFrames = self.app_state.audio_frames
        frames = CounterMetricFamily(
            "switchboard_worker_audio_frames",
            "Audio frames relayed by calls that have ended, by direction (caller: to xAI, "
            "agent: to the phone) and path (compiled: the compiled frame relay; python).",
            labels=["direction", "path"],
        )
        for direction in ("caller", "agent"):
            for path in ("compiled", "python"):
                frames.add_metric([direction, path], audio_frames[direction, path])
        yield frames
        refusals: RepeatedWarnings = self.app_state.refusals
        yield counter_by(
            "switchboard_worker_refusals",
            "Webhooks and sockets refused before a call began, by kind (the log says each kind "
            "at most once a minute).",
            "kind",
            refusals.counts,
        )
        yield GaugeMetricFamily(
            "switchboard_worker_pre_start_sockets",
            "Sockets waiting to show a stream token (no call place).",
            value=pre_start.waiting_now,
        )
        yield counter_by(
            "switchboard_worker_pre_start_closed",
            "Sockets closed before a token: too many from their address, or the oldest when "
            "all places were taken.",
            "reason",
            {"per_address": pre_start.refused, "evicted": pre_start.evicted},
        )
        media_plane: MediaPlane | None = getattr(self.app_state, "media_plane", None)
        if media_plane is not None:
            yield GaugeMetricFamily(
                "switchboard_worker_media_sockets",
                "Call sockets open on the media plane (with a call or waiting for its token).",
                value=media_plane.open_sockets,
            )
            yield counter_by(
                "switchboard_worker_media_sockets_refused",
                "Sockets the media plane refused or closed for breaking a bound.",
                "reason",
                {reason: media_plane.refused[reason] for reason in REFUSAL_REASONS},
            )


class WorkerMetrics:
    """One worker app's registry: its live state, its event-loop lag and its GC pauses."""

    def __init__(self, state: WorkerState, gc_pauses: GcPauses, loop_lag_interval: float) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.gc_pauses = gc_pauses
        self.registry.register(state)
        self.loop_lag = Histogram(
            "switchboard_worker_event_loop_lag_seconds",
            f"How late the event loop ran a timer, sampled every {loop_lag_interval * 1000:g} "
            "ms: what every call's audio waited on top of its own work.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "switchboard_worker_gc_pause_seconds",
            "How long each garbage collection, by generation (2: a full pass), held every call "
            "on the worker.",
            labelnames=["generation"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._by_generation = [self.gc_pause.labels(generation=str(g)) for g in range(3)]

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.drain_gc_pauses()

    def drain_gc_pauses(self) -> None:
        for generation, seconds in self.gc_pauses.drain():
            self._by_generation[generation].observe(seconds)

    def exposition(self) -> bytes:
        self.drain_gc_pauses()
        return generate_latest(self.registry)
