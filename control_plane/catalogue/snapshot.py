"""An in-memory copy of the catalogue for the session-config hot path.

Tiers, voices and voice maps change rarely and every change announces "config:*"; the snapshot
is loaded again on the first read after such a change (one query for the whole catalogue, shared
by every request), so resolving a config costs no catalogue queries at all.
"""

import threading
from dataclasses import dataclass

from sqlmodel import Session, col, select

from control_plane.catalogue.models import Tier, Voice, VoiceMap, VoiceMapEntry, VoiceResolution
from control_plane.catalogue.service import map_voice
from control_plane.errors import NotFoundError
from control_plane.kept import Generations, Stamp


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
    def __init__(self, generations: Generations) -> None:
        self._generations = generations
        self._kept: tuple[CatalogueData, Stamp] | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> CatalogueData | None:
        """The loaded catalogue, or None after a change until the next `get`."""
        kept = self._kept
        if kept is not None and kept[1] == self._generations.catalogue():
            return kept[0]
        return None

    def get(self, session: Session) -> CatalogueData:
        """The catalogue; after a change it is loaded again through the caller's session, never
        a second connection of its own (concurrent requests holding the whole pool would wait
        for that connection forever)."""
        data = self.current
        if data is not None:
            return data
        with self._lock:
            data = self.current
            if data is None:
                stamp = self._generations.catalogue()
                data = self._load(session)
                self._kept = (data, stamp)
        return data

    def _load(self, session: Session) -> CatalogueData:
        # Core rows, turned into detached objects: nothing joins the caller's identity map.
        connection = session.connection()
        tiers = {
            row.id: Tier(**row._mapping)
            for row in connection.execute(select(Tier.__table__))  # type: ignore[attr-defined]
        }
        voices: dict[str, list[str]] = {}
        ordered = select(Voice.provider, Voice.name).order_by(
            col(Voice.provider), col(Voice.sort_order), col(Voice.name)
        )
        for provider, name in connection.execute(ordered):
            voices.setdefault(provider, []).append(name)
        entries: dict[str, dict[str, str]] = {}
        mapped = select(
            VoiceMapEntry.target_provider, VoiceMapEntry.source_voice, VoiceMapEntry.target_voice
        )
        for target_provider, source_voice, target_voice in connection.execute(mapped):
            entries.setdefault(target_provider, {})[source_voice] = target_voice
        maps = select(VoiceMap.target_provider, VoiceMap.default_voice, VoiceMap.version)
        voice_maps = {
            provider: VoiceMapData(provider, default_voice, entries.get(provider, {}), version)
            for provider, default_voice, version in connection.execute(maps)
        }
        return CatalogueData(tiers=tiers, voices=voices, voice_maps=voice_maps)
