"""An in-memory copy of the catalogue for the session-config hot path.

Tiers, voices and voice maps change rarely and every change announces "config:*"; the snapshot
is loaded again then (one query for the whole catalogue, shared by every request), so resolving
a config costs no catalogue queries at all.

When the change reaches this process (after the writer's commit, or through LISTEN/NOTIFY), the
new catalogue is loaded *before* the catalogue counter moves, and kept under the stamp the
counter is about to read: a read sees the old catalogue up to the moment the counter moves and
the new one from then on, never none. (Loaded only on the next read instead, every read in
between fell through to the routes at once: an edit stalled every call start for ~100 ms.)
If that load fails the counter moves all the same and the next read loads it.
"""

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from control_plane.catalogue.models import Tier, Voice, VoiceMap, VoiceMapEntry, VoiceResolution
from control_plane.catalogue.service import map_voice
from control_plane.errors import NotFoundError
from control_plane.kept import Generations, Stamp

logger = logging.getLogger(__name__)


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
    def __init__(self, generations: Generations, engine: Engine | None = None) -> None:
        self._generations = generations
        self._engine = engine  # loads the catalogue ahead of a change (None: on the next read)
        self._kept: tuple[CatalogueData, Stamp] | None = None
        self._before: tuple[CatalogueData, Stamp] | None = None  # until the counter moves
        self._lock = threading.Lock()
        self._swapping = threading.Lock()  # one change at a time moves the catalogue counter

    @property
    def current(self) -> CatalogueData | None:
        """The loaded catalogue, or None after a change until the next `get`."""
        stamp = self._generations.catalogue()
        kept = self._kept
        if kept is not None and kept[1] == stamp:
            return kept[0]
        before = self._before
        if before is not None and before[1] == stamp:
            return before[0]
        return None

    def on_change(self, topic: str) -> None:
        """The change feed's subscriber in place of `Generations.on_change`: a change that moves
        the catalogue counter moves it only with the new catalogue in hand."""
        if self._engine is None or self._generations.catalogue_after(topic) == (
            self._generations.catalogue()
        ):
            self._generations.on_change(topic)
            return
        with self._swapping:
            try:
                with Session(self._engine) as session:
                    data: CatalogueData | None = self._load(session)
            except Exception:
                logger.warning("the catalogue could not be loaded ahead of a change", exc_info=True)
                data = None
            with self._lock:
                if data is not None:
                    self._before = self._kept
                    self._kept = (data, self._generations.catalogue_after(topic))
                self._generations.on_change(topic)

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
