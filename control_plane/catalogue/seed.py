"""The seed catalogue: five tiers, the voices of each provider, and the OpenAI → Grok voice map.

Seeding inserts what is missing and never overwrites a row an operator may have edited, so it is
safe to run on every deploy.
"""

from decimal import Decimal
from typing import Any

from sqlmodel import Session

from control_plane.catalogue.models import Tier, Voice, VoiceMap, VoiceMapEntry

GROK_FLAG = "grok-realtime-tier"

TIERS: list[dict[str, Any]] = [
    {
        "id": "premium",
        "name": "Premium",
        "description": "OpenAI Realtime speech-to-speech: the most natural conversations.",
        "cost_per_hour": Decimal("1.92"),
        "cost_per_minute": Decimal("0.032"),
        "pricing_source": "seed",
        "features": ["Speech-to-speech", "Natural interruptions", "Function calling", "10+ voices"],
        "engine": "openai-realtime",
        "llm_provider": "openai-realtime",
        "llm_model": "gpt-realtime",
        "telephony_provider": "twilio",
        "voice_provider": "openai",
        "quality": "highest",
        "sort_order": 10,
    },
    {
        "id": "premium-mini",
        "name": "Premium Mini",
        "description": "OpenAI Realtime mini model: speech-to-speech at a lower price.",
        "cost_per_hour": Decimal("0.54"),
        "cost_per_minute": Decimal("0.009"),
        "pricing_source": "seed",
        "features": ["Speech-to-speech", "Natural interruptions", "Function calling"],
        "engine": "openai-realtime",
        "llm_provider": "openai-realtime",
        "llm_model": "gpt-realtime-mini",
        "telephony_provider": "twilio",
        "voice_provider": "openai",
        "quality": "high",
        "sort_order": 20,
    },
    {
        "id": "balanced",
        "name": "Balanced",
        "description": "Pipecat pipeline: streaming speech-to-text, LLM and text-to-speech.",
        "cost_per_hour": Decimal("0.90"),
        "cost_per_minute": Decimal("0.015"),
        "pricing_source": "operator-set",
        "features": ["Streaming STT + LLM + TTS", "Function calling", "Choice of models"],
        "engine": "pipecat-pipeline",
        "llm_provider": "openai",
        "llm_model": "gpt-4o-mini",
        "stt_provider": "deepgram",
        "stt_model": "nova-3",
        "tts_provider": "openai",
        "tts_model": "gpt-4o-mini-tts",
        "telephony_provider": "twilio",
        "voice_provider": "openai",
        "quality": "good",
        "sort_order": 30,
    },
    {
        "id": "budget",
        "name": "Budget",
        "description": "Pipecat pipeline on the most economical models.",
        "cost_per_hour": Decimal("0.36"),
        "cost_per_minute": Decimal("0.006"),
        "pricing_source": "operator-set",
        "features": ["Streaming STT + LLM + TTS", "Function calling"],
        "engine": "pipecat-pipeline",
        "llm_provider": "openai",
        "llm_model": "gpt-4.1-nano",
        "stt_provider": "deepgram",
        "stt_model": "nova-3",
        "tts_provider": "openai",
        "tts_model": "tts-1",
        "telephony_provider": "twilio",
        "voice_provider": "openai",
        "quality": "standard",
        "sort_order": 40,
    },
    {
        "id": "grok-realtime",
        "name": "Grok Realtime",
        "description": "xAI Grok Voice Agent with X/web search integration",
        "cost_per_hour": Decimal("3.00"),
        "cost_per_minute": Decimal("0.05"),
        "pricing_source": "seed",
        "features": [
            "Native speech-to-speech",
            "Real-time X search",
            "Web search",
            "5 expressive voices",
            "Multilingual",
        ],
        "engine": "grok-realtime",
        "llm_provider": "grok-realtime",
        "llm_model": "grok-voice-latest",
        "stt_provider": "grok",
        "tts_provider": "grok",
        "telephony_provider": "telnyx",
        "voice_provider": "grok",
        "expected_latency_ms": 780,
        "quality": "premium",
        "flag_name": GROK_FLAG,
        "sort_order": 50,
    },
]

VOICES: dict[str, list[tuple[str, str]]] = {
    "grok": [
        ("Ara", "Warm and friendly (default)"),
        ("Rex", "Confident and clear"),
        ("Sal", "Smooth and balanced"),
        ("Eve", "Energetic and upbeat"),
        ("Leo", "Authoritative and strong"),
    ],
    "openai": [
        ("alloy", ""),
        ("ash", ""),
        ("ballad", ""),
        ("coral", ""),
        ("echo", ""),
        ("sage", ""),
        ("shimmer", ""),
        ("verse", ""),
        ("marin", ""),
        ("cedar", ""),
        ("fable", ""),
        ("onyx", ""),
        ("nova", ""),
    ],
}
DEFAULT_VOICES = {"grok": "Ara", "openai": "alloy"}

OPENAI_TO_GROK = {
    "marin": "Ara",
    "cedar": "Rex",
    "shimmer": "Eve",
    "alloy": "Sal",
    "onyx": "Rex",
    "echo": "Ara",
    "nova": "Eve",
}


def seed_catalogue(session: Session) -> dict[str, int]:
    """Insert the seed catalogue where it is missing. Returns how many rows were added."""
    added = {"tiers": 0, "voices": 0, "voice_maps": 0}
    for row in TIERS:
        if session.get(Tier, row["id"]) is None:
            session.add(Tier(**row))
            added["tiers"] += 1
    for provider, voices in VOICES.items():
        for order, (name, description) in enumerate(voices):
            if session.get(Voice, (provider, name)) is None:
                session.add(
                    Voice(
                        provider=provider,
                        name=name,
                        description=description,
                        is_default=name == DEFAULT_VOICES[provider],
                        sort_order=order,
                    )
                )
                added["voices"] += 1
    session.flush()
    if session.get(VoiceMap, "grok") is None:
        session.add(VoiceMap(target_provider="grok", source_provider="openai", default_voice="Ara"))
        session.flush()
        for source, target in OPENAI_TO_GROK.items():
            session.add(
                VoiceMapEntry(target_provider="grok", source_voice=source, target_voice=target)
            )
        added["voice_maps"] += 1
    session.flush()
    return added
