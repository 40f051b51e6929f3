"""An in-memory copy of the catalogue for the session-config hot path.

Tiers, voices and voice maps change rarely and every change announces "config:*"; the snapshot
is rebuilt lazily on the next read after such a change, so resolving a config costs no catalogue
queries at all.
"""

import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from control_plane.catalogue.models import Tier, Voice, VoiceMap, VoiceMapEntry, VoiceResolution
from control_plane.catalogue.service import map_voice
from control_plane.changes import RESYNC
from control_plane.errors import NotFoundError


@dataclass(frozen=True)
class VoiceMapData:
    target_provider: str
    default_voice: str
    entries: dict[str, str]
    version: int


@dataclass(frozen=True)
class CatalogueData:
    tiers: dict[str, Tier]
    voices: dict[str, list[str]]
    voice_maps: dict[str, VoiceMapData]

    def tier(self, tier_id: str) -> Tier:
        tier = self.tiers.get(tier_id)
        if tier is None:
            raise NotFoundError(f"Tier '{tier_id}' does not exist.", code="tier_not_found")
        return tier

    def speak(self, tier: Tier, voice: str) -> VoiceResolution | None:
        """The voice a call on this tier speaks with, or None when the tier has no voice map."""
        voice_map = self.voice_maps.get(tier.voice_provider)
        if voice_map is None:
            return None
        return map_voice(
            voice_map.target_provider,
            self.voices.get(voice_map.target_provider, []),
            voice_map.entries,
            voice_map.default_voice,
            voice,
        )


class CatalogueSnapshot:
    INVALIDATING = {"config:*", RESYNC}

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._data: CatalogueData | None = None
        self._lock = threading.Lock()

    def on_change(self, topic: str) -> None:
        if topic in self.INVALIDATING:
            self._data = None

    def get(self) -> CatalogueData:
        data = self._data
        if data is None:
            with self._lock:
                data = self._data = self._data or self._load()
        return data

    def _load(self) -> CatalogueData:
        with Session(self._engine, expire_on_commit=False) as session:
            tiers = {t.id: t for t in session.exec(select(Tier))}
            voices: dict[str, list[str]] = {}
            ordered = select(Voice).order_by(
                col(Voice.provider), col(Voice.sort_order), col(Voice.name)
            )
            for voice in session.exec(ordered):
                voices.setdefault(voice.provider, []).append(voice.name)
            entries: dict[str, dict[str, str]] = {}
            for entry in session.exec(select(VoiceMapEntry)):
                entries.setdefault(entry.target_provider, {})[entry.source_voice] = (
                    entry.target_voice
                )
            voice_maps = {
                m.target_provider: VoiceMapData(
                    m.target_provider,
                    m.default_voice,
                    entries.get(m.target_provider, {}),
                    m.version,
                )
                for m in session.exec(select(VoiceMap))
            }
            for tier in tiers.values():
                session.expunge(tier)
        return CatalogueData(tiers=tiers, voices=voices, voice_maps=voice_maps)
