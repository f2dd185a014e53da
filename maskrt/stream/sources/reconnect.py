"""When a live source stops trying: ``forever``, ``N`` reconnection attempts, or ``for:SECONDS``
of outage. A camera that reboots wants ``forever``; a batch job that also scores files wants a
bound, or one dead camera keeps the whole job from ever finishing."""

from __future__ import annotations

from dataclasses import dataclass

#: reconnection attempts of a live source, by default, in a run that also has files (0.5 + 1 + 2
#: s of back-off: a camera that is merely slow to answer gets its chance, a dead one costs ~4 s)
BATCH_RECONNECTS = 3

POLICY_HELP = "forever, N (reconnection attempts after a failure) or for:SECONDS (of outage)"


@dataclass(frozen=True)
class ReconnectPolicy:
    """attempts: failed attempts tolerated after the first failure of an outage (None: no limit).
    seconds: how long an outage may last before the source gives up (None: no limit)."""

    attempts: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 0:
            raise ValueError(f"reconnect attempts: expected None or >= 0, got {self.attempts}")
        if self.seconds is not None and not self.seconds >= 0:
            raise ValueError(f"reconnect seconds: expected None or >= 0, got {self.seconds}")

    @property
    def forever(self) -> bool:
        return self.attempts is None and self.seconds is None

    def gives_up(self, failed_attempts: int, outage_s: float) -> bool:
        """After ``failed_attempts`` consecutive failures in an outage that began ``outage_s``
        seconds ago: stop trying?"""
        if self.attempts is not None and failed_attempts > self.attempts:
            return True
        return self.seconds is not None and outage_s >= self.seconds

    def describe(self) -> str:
        if self.forever:
            return "forever"
        if self.seconds is not None:
            return f"for:{self.seconds:g}"
        return str(self.attempts)

    @classmethod
    def parse(cls, text: "str | int | ReconnectPolicy | None") -> "ReconnectPolicy":
        """``"forever"``, ``"2"``, ``"for:30"`` (or a policy, an int, None = forever);
        ValueError saying what was expected otherwise."""
        if isinstance(text, ReconnectPolicy):
            return text
        if text is None:
            return cls()
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(attempts=text)
        value = str(text).strip().lower()
        try:
            if value == "forever":
                return cls()
            if value.startswith("for:"):
                return cls(seconds=float(value[4:]))
            return cls(attempts=int(value))
        except ValueError:
            pass
        raise ValueError(f"reconnect: expected {POLICY_HELP}, got {text!r}")


FOREVER = ReconnectPolicy()
