"""A clock the test moves by hand: pass it where code takes `clock=`, then set `now`."""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
