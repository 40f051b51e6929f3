"""Sign-in throttling: growing back-off per (account, client address) and per address, in the
database.

Each failed sign-in counts against the account *from that address* and against the address.
Past the free attempts, the key is locked for base * 2^(extra failures) seconds, capped; a
locked key is refused before any password is hashed. A success clears its (account, address)
count, not the address's. The state lives in `sign_in_throttles`, so a burst spread over
several processes meets one count.

There is no lock on the account alone: whoever can reach the sign-in page could then keep its
owner out, one wrong guess from a fresh address each time the lock ends. Guessing one account
from many addresses is bounded per address instead (and by the bounded password hashing); the
right password from an address that is not itself over its limit always gets in.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete

from control_plane.auth.models import SignInThrottle
from control_plane.core import utcnow
from control_plane.settings import Settings


@dataclass(frozen=True)
class ThrottlePolicy:
    account_free_attempts: int
    address_free_attempts: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "ThrottlePolicy":
        return cls(
            account_free_attempts=settings.sign_in_free_attempts,
            address_free_attempts=settings.sign_in_free_attempts_per_address,
            base_seconds=settings.sign_in_backoff_base_seconds,
            max_seconds=settings.sign_in_backoff_max_seconds,
        )

    def lock_for(self, key: str, failures: int) -> float:
        free = self.account_free_attempts if key.startswith("pair:") else self.address_free_attempts
        if failures < free:
            return 0.0
        return float(min(self.max_seconds, self.base_seconds * 2 ** (failures - free)))


def keys_for(email: str, address: str | None) -> list[str]:
    """The counts a sign-in meets: the account from this address, and this address."""
    where = (address or "unknown")[:45]
    return [f"pair:{email.strip().lower()[:254]}|{where}", f"address:{where}"]


def retry_after(session: Session, keys: list[str], now: datetime | None = None) -> int | None:
    """Seconds until these keys may try again, or None when none is locked."""
    now = now or utcnow()
    waits = [
        (row.locked_until - now).total_seconds()
        for key in keys
        if (row := session.get(SignInThrottle, key)) is not None
        and row.locked_until is not None
        and row.locked_until > now
    ]
    return math.ceil(max(waits)) if waits else None


def record_failure(
    session: Session, policy: ThrottlePolicy, keys: list[str], now: datetime | None = None
) -> list[str]:
    """Count a failure against every key; returns the keys this failure locked."""
    now = now or utcnow()
    locked = []
    for key in keys:
        row = _locked_row(session, key)
        row.failures += 1
        row.updated_at = now
        seconds = policy.lock_for(key, row.failures)
        if seconds:
            row.locked_until = now + timedelta(seconds=seconds)
            locked.append(key)
        session.add(row)
    session.flush()
    return locked


def record_success(session: Session, email: str, address: str | None) -> None:
    pair = keys_for(email, address)[0]
    session.exec(delete(SignInThrottle).where(col(SignInThrottle.key) == pair))


def forget_older_than(session: Session, age: timedelta) -> int:
    """Drop counts nobody has touched for `age` (a scheduled clean-up)."""
    result = session.exec(
        delete(SignInThrottle).where(col(SignInThrottle.updated_at) < utcnow() - age)
    )
    return int(result.rowcount or 0)


def _locked_row(session: Session, key: str) -> SignInThrottle:
    """The key's row, locked for this transaction (FOR UPDATE on PostgreSQL): two processes
    counting the same key at once must both count."""
    row = session.get(SignInThrottle, key, with_for_update=True)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = SignInThrottle(key=key)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:  # another process created it first
        found = session.get(SignInThrottle, key, with_for_update=True, populate_existing=True)
        assert found is not None
        return found
