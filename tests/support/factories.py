"""Small makers the tests share: device ids as the Particle simulator names them, random AuthTokens,
a clock moved by hand, and the AuthTokens Blynk's documentation shows."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from tokenflow.store import NewToken
from tokenflow_local.lambda_runtime import LambdaContext

# The two AuthTokens printed in Blynk's documentation (the firmware's host tests use them too).
BLYNK_DOC_TOKEN = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl"
BLYNK_DOC_TOKEN_2 = "P-0ekUL3EjrEkE_UnIIzsIggqyQXYd0z"
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def device_id(n: int) -> str:
    """Device ``n`` (from 1) of the simulator's product 0, as ParticleSimulator(product_id=0) names it:
    24 lowercase hex characters like a Particle device id."""
    return f"e00fce68{n:016x}"


def random_tokens(count: int, seed: int = 0) -> list[NewToken]:
    """``count`` AuthTokens (32 characters of [A-Za-z0-9_-]), the same ones for the same seed."""
    rng = random.Random(seed)
    return [NewToken("".join(rng.choice(TOKEN_ALPHABET) for _ in range(32))) for _ in range(count)]


class ManualClock:
    """A clock (seconds) that moves only when a test sets ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TableClock:
    """The functions' clock (UTC ISO 8601 with milliseconds, as the table stores time) that moves
    only when a test sets ``now`` (a datetime)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> str:
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Countdown(LambdaContext):
    """A Lambda context whose remaining time is ``left_ms``, less ``step_ms`` after each question:
    each page a sweep lists costs ``step_ms`` of its budget."""

    left_ms: int = 300_000
    step_ms: int = 20_000

    def get_remaining_time_in_millis(self) -> int:
        left = self.left_ms
        self.left_ms -= self.step_ms
        return left
