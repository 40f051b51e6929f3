"""People's passwords, hashed with argon2id at the cost the settings choose.

`standard` is argon2-cffi's default, RFC 9106's low-memory choice (3 passes over 64 MiB, ~0.1 s
of one core here). `cheapest` is argon2-cffi's profile for test suites (8 KiB, one pass, a 4-byte
hash): it keeps every code path and the stored format, at a thousandth of the cost. Production
refuses it (`settings.production_refusals`). A stored hash carries its own parameters, so
either kind verifies under either setting.
"""

from functools import cached_property
from typing import Literal

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

PasswordCost = Literal["standard", "cheapest"]
PARAMETERS = {"standard": profiles.RFC_9106_LOW_MEMORY, "cheapest": profiles.CHEAPEST}


class Passwords:
    def __init__(self, cost: PasswordCost = "standard") -> None:
        self.hasher = PasswordHasher.from_parameters(PARAMETERS[cost])

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def matches(self, stored: str | None, password: str) -> bool:
        """Whether `password` is the one `stored` was made from. With nothing stored (no such
        person), a hash of the same cost is checked anyway, so the answer takes as long."""
        try:
            self.hasher.verify(stored or self._stand_in, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    @cached_property
    def _stand_in(self) -> str:
        # Built at the first check, not at start: a hash costs as much as a sign-in.
        return self.hasher.hash("switchboard-timing-equaliser")
