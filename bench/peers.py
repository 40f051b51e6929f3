"""`make bench-peers`: the call worker beside a pipecat bot per call, on the same phones and xAI.

Both bridges run at once, each its own process on the same CPU (BENCH_WORKER_CORE, default 0),
only one carrying calls at a time; the fake xAI, the control plane and the phones share the
other core. At each load (BENCH_PEERS_CALLS, default 25,50,100,200,400 concurrent calls) both
carry the same scripted Twilio calls (bench/phone_calls.py: 0.5 s of speech, then the agent's
1 s reply in full, over and over for BENCH_PEERS_SECONDS, default 10), one after the other,
which goes first alternating from load to load. Reported per side and load:
- CPU ms per call-second: the bridge process's CPU time over the talk / the seconds of call
  the phones streamed (a caller frame every 20 ms);
- agent frames delivered (20 ms frames at the phones / frames xAI sent) and caller frames
  delivered (at xAI / sent by the phones);
- lag p50/p99 both ways, from the send time each 20 ms of audio carries (tests/fakes/stamps.py)
  to when it reached the other end's socket.
A side *sustains* a load when no call fails, at least 90 % of the frames arrive both ways and
lag p99 stays within 250 ms both ways (generous: the phone-side goal is 20 ms). A side that does
not is not run at the larger loads (they would only take longer to say the same); a side that
sustains none of them has both sides run again at half the smallest load, and half that, until
it does. The report names the largest load each side sustained and compares CPU per call-second
at the largest both sustained; that comparison is run BENCH_PEERS_ROUNDS times in all (default
3, who goes first alternating), because on this shared host the bot's cost at one load moves by
a third from run to run: each round's ratio is printed, a round in which either side did not
sustain the load is left out (and said), and the verdict is the median of the rest.

(a) `switchboard worker`, dialled as Twilio dials it (a signed webhook, then the stream);
(b) bench/pipecat_bot.py: pipecat's FastAPI WebSocket transport, Twilio serializer, context
    aggregators and Grok realtime service, a pipeline per call, all in one process.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.phone_calls import Dialled, delivery, talk  # noqa: E402
from bench.runtime import (  # noqa: E402
    RESULTS_SUFFIX,
    WORKER,
    XAI_KEY,
    bridged_calls,
    call_stack,
    cpu_times,
    kernel_share,
    log_problems,
    placement,
    start,
    wakeups,
)
from switchboard_runtime.loop_lag import LoopLagMonitor  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

LOADS = [int(n) for n in os.environ.get("BENCH_PEERS_CALLS", "25,50,100,200,400").split(",")]
SECONDS = float(os.environ.get("BENCH_PEERS_SECONDS", "10"))
ROUNDS = max(1, int(os.environ.get("BENCH_PEERS_ROUNDS", "3")))
PEER_SIDE = "pipecat bot per call"
WORKER_SIDE = "switchboard worker" + (f" ({WORKER.replace('-', ' ')})" if RESULTS_SUFFIX else "")
SIDE_WIDTH = max(len(WORKER_SIDE), 22)
SUSTAINED_FRAMES = 0.9  # delivered, each way
SUSTAINED_LAG_P99_MS = 250.0  # each way


def largest_sustained(rows: list[dict[str, Any]], side: str) -> int:
    return max((r["calls"] for r in rows if r["side"] == side and r["sustained"]), default=0)


def ratio_round(pair: list[dict[str, Any]]) -> dict[str, Any]:
    """One round of the comparison: both sides' CPU per call-second at one load, and the bot's
    over the worker's, counted only when both sustained the load."""
    by_side = {figures["side"]: figures for figures in pair}
    worker, peer = by_side[WORKER_SIDE], by_side[PEER_SIDE]
    both = worker["sustained"] and peer["sustained"]
    return {
        "worker_cpu_ms_per_call_second": worker["cpu_ms_per_call_second"],
        "peer_cpu_ms_per_call_second": peer["cpu_ms_per_call_second"],
        "both_sustained": both,
        "ratio": peer["cpu_ms_per_call_second"] / worker["cpu_ms_per_call_second"]
        if both
        else None,
    }


def sustained(figures: dict[str, Any]) -> bool:
    return bool(
        figures["failed_calls"] == 0
        and min(figures["agent_frames_delivered"], figures["caller_frames_delivered"])
        >= SUSTAINED_FRAMES
        and max(figures["caller_to_xai_lag_ms"][1], figures["xai_to_phone_lag_ms"][1])
        <= SUSTAINED_LAG_P99_MS
    )


async def pipecat_calls(bot: str, bot_pid: int, fake: str, calls: int) -> dict[str, Any]:
    """`calls` scripted phones → the pipecat bot process → the fake xAI."""
    stream_url = bot.replace("http://", "ws://") + "/ws"
    measuring: dict[str, float] = {}
    cpu_before: list[tuple[float, float]] = []
    http = httpx.AsyncClient()
    phones_loop = LoopLagMonitor(keep=100_000)

    async def dial(index: int, call_sid: str) -> Dialled:
        return Dialled(stream_url)  # a fixed TwiML <Stream>, as pipecat's examples serve

    async def on_all_connected() -> None:
        await http.get(f"{fake}/stats", params={"reset": "1"})
        phones_loop.start()
        cpu_before.append(cpu_times(bot_pid))
        measuring["started"] = time.perf_counter()
        measuring["wakeups"] = wakeups(bot_pid)

    phones = await talk(dial, calls, SECONDS, on_all_connected=on_all_connected)
    wall = time.perf_counter() - measuring["started"]
    await phones_loop.stop()
    before, after = cpu_before[0], cpu_times(bot_pid)
    cpu = sum(after) - sum(before)
    woke = wakeups(bot_pid) - measuring["wakeups"]
    in_kernel = kernel_share(before, after)
    fake_stats = (await http.get(f"{fake}/stats")).json()
    await http.aclose()
    return {
        "concurrent_calls": calls,
        **delivery(phones, fake_stats),
        "bridge_cpu_ms_per_call_second": cpu * 1000 / phones.call_seconds,
        "phones_streamed_share": phones.streamed_share(calls, wall),
        "bridge_cores_used": cpu / wall,
        "bridge_wakeups_per_second": woke / wall,
        "bridge_kernel_share": in_kernel,
        "wall_seconds": wall,
        # The stand-ins' own lateness, as bench/runtime.py reports it beside the worker's.
        "loop_lag_ms": {
            "fake_xai": {"0.99": fake_stats["loop_lag_ms"]["0.99"]},
            "phones": {"0.99": (phones_loop.quantile(0.99) or 0.0) * 1000},
        },
    }


def row(side: str, figures: dict[str, Any]) -> dict[str, Any]:
    """One side at one load, in the report's terms."""
    cpu = figures.get("bridge_cpu_ms_per_call_second", figures.get("worker_cpu_ms_per_call_second"))
    cores = figures.get("bridge_cores_used", figures.get("cores_used", {}).get("worker"))
    woke = figures.get("bridge_wakeups_per_second", figures.get("worker_wakeups_per_second"))
    in_kernel = figures.get("bridge_kernel_share", figures.get("worker_kernel_share"))
    loops = figures["loop_lag_ms"]
    return {
        "side": side,
        "calls": figures["concurrent_calls"],
        "cpu_ms_per_call_second": cpu,
        "cores_used": cores,
        # How often its event loop slept and woke: a loop that hardly sleeps is saturated.
        "wakeups_per_second": woke,
        # Of its CPU, the share in the kernel: socket system calls and the loop's sleeps and
        # wake-ups, what no Python or compiled relay inside the bridge can take off.
        "kernel_share": in_kernel,
        # Event-loop lag p99 (ms) of the bridge (the worker's, a bucket bound from its /metrics;
        # the bot's is not measured), the fake xAI and the phones: a late stand-in reads frames
        # late, and the lag figures then are partly its own.
        "loop_lag_p99_ms": {
            "bridge": loops.get("worker_at_most", {}).get("0.99"),
            "fake_xai": loops["fake_xai"]["0.99"],
            "phones": loops["phones"]["0.99"],
        },
        "agent_frames_delivered": figures["agent_frames_at_phones"]
        / max(1, figures["agent_frames_sent_by_xai"]),
        "caller_frames_delivered": figures["caller_frames_at_xai"]
        / max(1, figures["caller_frames_sent_by_phones"]),
        "caller_to_xai_lag_ms": [
            figures["caller_to_xai_lag_p50_ms"],
            figures["caller_to_xai_lag_p99_ms"],
        ],
        "xai_to_phone_lag_ms": [
            figures["xai_to_phone_lag_p50_ms"],
            figures["xai_to_phone_lag_p99_ms"],
        ],
        "failed_calls": len(figures["failed_calls"]),
        "phones_streamed_share": figures["phones_streamed_share"],
        "reply_audio_share": figures["reply_audio_share"],
    }


def loop_lags(p99: dict[str, float | None]) -> str:
    return " / ".join("-" if ms is None else f"{ms:.0f}" for ms in p99.values()) + " ms"


def main() -> None:
    import uvloop

    bridge_cpus, harness_cpus = placement()
    os.sched_setaffinity(0, harness_cpus)
    rows: list[dict[str, Any]] = []
    repeats: list[dict[str, Any]] = []  # the comparison's further rounds
    saturated: dict[str, int] = {}
    with call_stack(bridge_cpus) as stack:
        bot_port = free_port()
        bot_log = stack.workdir / "pipecat_bot.log"
        bot = start(
            [
                *(sys.executable, "-m", "uvicorn", "bench.pipecat_bot:create_app", "--factory"),
                *("--port", str(bot_port), "--log-level", "warning", "--no-access-log"),
            ],
            {
                **os.environ,
                "PIPECAT_BOT_REALTIME_URL": f"ws://127.0.0.1:{stack.realtime_port}/v1/realtime",
                "PIPECAT_BOT_XAI_KEY": XAI_KEY,
            },
            f"http://127.0.0.1:{bot_port}/healthz",
            bot_log,
            cpus=bridge_cpus,
        )
        try:

            def worker_side(calls: int, run: int) -> dict[str, Any]:
                return uvloop.run(bridged_calls(stack, run, calls))

            def pipecat_side(calls: int, run: int) -> dict[str, Any]:
                return uvloop.run(
                    pipecat_calls(f"http://127.0.0.1:{bot_port}", bot.pid, stack.fake_url, calls)
                )

            sides = {WORKER_SIDE: worker_side, PEER_SIDE: pipecat_side}

            def run_pair(
                calls: int, index: int, worker_first: bool, skip: set[str]
            ) -> list[dict[str, Any]]:
                """Both sides at one load (`index` numbers the run: its call SIDs)."""
                order = list(sides) if worker_first else list(reversed(sides))
                pair = []
                for side in order:
                    if side in skip:
                        continue
                    figures = row(side, sides[side](calls, index))
                    figures["sustained"] = sustained(figures)
                    print(json.dumps(figures), flush=True)
                    pair.append(figures)
                return pair

            def run_load(calls: int, index: int, skip: set[str]) -> None:
                for figures in run_pair(calls, index, index % 2 == 0, skip):
                    rows.append(figures)
                    if not figures["sustained"] and figures["side"] not in saturated:
                        saturated[figures["side"]] = calls

            def largest_sustained_by_both() -> int:
                return min(largest_sustained(rows, side) for side in sides)

            for index, calls in enumerate(LOADS):
                run_load(calls, index, skip=set(saturated))
            # A side that sustained none of the loads: both sides again at half the smallest,
            # and half that, until it does, so the goal's "largest load both sustain" exists.
            calls, index = min(LOADS), len(LOADS)
            while calls > 1 and not largest_sustained_by_both():
                calls, index = calls // 2, index + 1
                run_load(calls, index, skip=set())
            both = largest_sustained_by_both()
            first = [r for r in rows if r["calls"] == both]
            rounds = [ratio_round(first)] if both else []
            for round_number in range(1, ROUNDS if both else 0):
                index += 1
                worker_first = (first[0]["side"] == WORKER_SIDE) == (round_number % 2 == 0)
                pair = run_pair(both, index, worker_first, skip=set())
                repeats.extend(pair)
                rounds.append(ratio_round(pair))
        finally:
            bot.terminate()
            bot.wait(timeout=15)
        problems = log_problems({**stack.logs, "pipecat_bot": bot_log})
    results = {
        "loads": LOADS,
        "seconds": SECONDS,
        "bridge_cpus": sorted(bridge_cpus) if bridge_cpus else "shared",
        "stand_in_cpus": sorted(harness_cpus),
        "rows": rows,
        "repeat_rows": repeats,
        "saturated_at": saturated,
        "server_log_problems": problems,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    print(
        f"\n{'side':<{SIDE_WIDTH}}{'calls':>6}{'CPU ms/call-s':>15}{'cores':>7}{'agent frames':>14}"
        f"{'caller frames':>15}{'lag caller->xAI p50/p99':>26}{'lag xAI->phone p50/p99':>25}"
        f"{'streamed':>10}{'replies':>9}{'wake-ups/s':>12}{'in kernel':>11}"
        f"{'loop lag p99 bridge/fake/phones':>33}"
    )
    for figures in rows + repeats:
        up, down = figures["caller_to_xai_lag_ms"], figures["xai_to_phone_lag_ms"]
        print(
            f"{figures['side']:<{SIDE_WIDTH}}{figures['calls']:>6}{figures['cpu_ms_per_call_second']:>15.2f}"
            f"{figures['cores_used']:>7.2f}{figures['agent_frames_delivered']:>14.1%}"
            f"{figures['caller_frames_delivered']:>15.1%}"
            f"{f'{up[0]:.1f} / {up[1]:.1f} ms':>26}{f'{down[0]:.1f} / {down[1]:.1f} ms':>25}"
            f"{figures['phones_streamed_share']:>10.0%}{figures['reply_audio_share']:>9.0%}"
            f"{figures['wakeups_per_second']:>12.0f}{figures['kernel_share']:>11.0%}"
            f"{loop_lags(figures['loop_lag_p99_ms']):>33}"
        )
    print(
        "streamed: the share of calls x wall time the phones streamed; well under 100 %, the "
        "stand-ins fell behind and the load was less than its number of calls; replies: the "
        "agent audio xAI sent per caller frame, as a share of the script's (under 100 %, "
        "replies started late and the calls carried less agent audio); wake-ups/s: how often "
        "the bridge's event loop slept and woke (its main thread's voluntary context switches); in "
        "kernel: the share of the bridge's CPU spent in the kernel (/proc/PID/stat); loop lag: how "
        "late each process's event loop ran (the worker's a bucket bound, the bot's not measured)"
    )
    for side, calls in saturated.items():
        print(f"{side}: did not sustain {calls} calls; not run at larger loads")
    results["largest_sustained"] = {side: largest_sustained(rows, side) for side in sides}
    results["largest_sustained_by_both"] = both
    results["ratio_rounds"] = rounds
    ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    if ratios:
        median = statistics.median(ratios)
        results["cpu_ratio_at_largest_sustained_by_both"] = median
        each = ", ".join(
            f"{r['ratio']:.1f}x ({r['peer_cpu_ms_per_call_second']:.2f} / "
            f"{r['worker_cpu_ms_per_call_second']:.2f} ms)"
            if r["ratio"] is not None
            else "left out (a side did not sustain the load)"
            for r in rounds
        )
        print(
            f"at {both} calls, the largest load both sustain, round by round: the pipecat bot "
            f"spends {each} of the worker's CPU per call-second; median "
            f"{median:.1f}x of {len(ratios)} (goal >= 10x)"
        )
    name = f"peers{RESULTS_SUFFIX}.json"
    (out / name).write_text(json.dumps(results, indent=2))
    for name, lines in problems.items():
        if lines:
            print(f"{name} logged: {lines[0][:160]}")


if __name__ == "__main__":
    main()
