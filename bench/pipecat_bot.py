"""The peer in `make bench-peers`: a pipecat bot per Twilio call, built as pipecat's docs build one.

A FastAPI WebSocket endpoint per media stream; per call a pipeline of pipecat's FastAPI WebSocket
transport with its Twilio serializer (μ-law 8 kHz ↔ PCM16), a context aggregator pair and its
Grok realtime service, all at telephone rate (8 kHz in and out, as pipecat's Twilio examples set
it), all calls in this one process. Pointed at the fake xAI by PIPECAT_BOT_REALTIME_URL (and
PIPECAT_BOT_XAI_KEY); `uvicorn bench.pipecat_bot:create_app --factory` serves it.
"""

import os

from fastapi import FastAPI, WebSocket
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.xai.realtime.events import SessionProperties
from pipecat.services.xai.realtime.llm import GrokRealtimeLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

TELEPHONE_RATE = 8000


async def run_bot(websocket: WebSocket, realtime_url: str, xai_key: str) -> None:
    """One call, from its stream's `start` to its hang-up."""
    _, call = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call["stream_id"],
        call_sid=call["call_id"],
        # Hanging up goes through Twilio's REST API, which the benchmark's phones are not.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    llm = GrokRealtimeLLMService(
        api_key=xai_key,
        base_url=realtime_url,
        settings=GrokRealtimeLLMService.Settings(
            session_properties=SessionProperties(voice="ara", instructions="You answer calls.")
        ),
    )
    context = LLMContextAggregatorPair(LLMContext())
    pipeline = Pipeline(
        [transport.input(), context.user(), llm, transport.output(), context.assistant()]
    )
    task = PipelineTask(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=TELEPHONE_RATE, audio_out_sample_rate=TELEPHONE_RATE
        ),
    )

    @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
    async def on_client_disconnected(transport: object, client: object) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def create_app() -> FastAPI:
    realtime_url = os.environ["PIPECAT_BOT_REALTIME_URL"]
    xai_key = os.environ["PIPECAT_BOT_XAI_KEY"]
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_bot(websocket, realtime_url, xai_key)

    return app
