"""The single settings object: every function reads its configuration here and nowhere else.

Plain configuration comes from environment variables set by template.yaml (or the local stack).
Secrets never do: the environment names the SSM SecureString parameter, and ``secret()`` reads it
through Powertools Parameters (decrypted, cached for ``SECRET_MAX_AGE`` seconds).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

SECRET_MAX_AGE = 300
LEDGER_SCOPES = ("sandbox", "org")


class ConfigurationError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    table_name: str = ""
    exports_bucket: str = ""
    assign_queue_url: str = ""
    sweep_function_name: str = ""
    particle_api_url: str = "https://api.particle.io"
    particle_product: str = ""
    particle_ledger: str = "blynk-tokens-c2d"
    # Which Ledger API path the product's Ledger lives under: /v1 (sandbox) or /v1/orgs/{org}, the
    # only forms Particle's SDK builds (REFERENCE.md; proven in tests/contract/test_particle_sdk.py).
    particle_ledger_scope: str = "sandbox"
    particle_org: str = ""
    particle_token_param: str = "/tokenflow/particle-token"  # noqa: S105 (a parameter name)
    webhook_secret_param: str = "/tokenflow/webhook-secret"  # noqa: S105 (a parameter name)
    low_stock_threshold: int = 50
    max_delivery_attempts: int = 5
    # The sweep's schedule expression (template.yaml's SweepSchedule): it paces the sweep's passes.
    sweep_schedule: str = ""
    # Particle's documented API limit: 10,000 requests per 5 minutes (a sliding window) per public
    # IP, shared by everything behind it (REFERENCE.md; https://docs.particle.io/reference/cloud-apis/api/,
    # "API rate limits"). A function's client paces itself to ``particle_rate_share`` of it, divided
    # among ``particle_rate_clients`` concurrent invocations (each has a client of its own), so the
    # fleet stays under the limit instead of finding it by 429s; share 0: no pacing (429s only).
    particle_rate_limit: int = 10_000
    particle_rate_window: float = 300.0
    particle_rate_share: float = 0.0
    particle_rate_clients: int = 1

    @property
    def particle_request_budget(self) -> tuple[int, float] | None:
        """(requests, seconds) one client may send: its share of the limit, or None (no pacing)."""
        if self.particle_rate_share <= 0:
            return None
        requests = int(
            self.particle_rate_limit * min(1.0, self.particle_rate_share) / max(1, self.particle_rate_clients)
        )
        return max(1, requests), self.particle_rate_window

    @property
    def sweep_pass_interval(self) -> float:
        """Seconds between the starts of two sweep passes, at least (``pass_interval``)."""
        return pass_interval(self.sweep_schedule)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        try:
            settings = cls(
                table_name=env.get("TABLE_NAME", ""),
                exports_bucket=env.get("EXPORTS_BUCKET", ""),
                assign_queue_url=env.get("ASSIGN_QUEUE_URL", ""),
                sweep_function_name=env.get("SWEEP_FUNCTION_NAME", ""),
                particle_api_url=env.get("PARTICLE_API_URL", cls.particle_api_url).rstrip("/"),
                particle_product=env.get("PARTICLE_PRODUCT", ""),
                particle_ledger=env.get("PARTICLE_LEDGER", cls.particle_ledger),
                particle_ledger_scope=env.get("PARTICLE_LEDGER_SCOPE", cls.particle_ledger_scope),
                particle_org=env.get("PARTICLE_ORG", ""),
                particle_token_param=env.get("PARTICLE_TOKEN_PARAM", cls.particle_token_param),
                webhook_secret_param=env.get("WEBHOOK_SECRET_PARAM", cls.webhook_secret_param),
                low_stock_threshold=int(env.get("LOW_STOCK_THRESHOLD", cls.low_stock_threshold)),
                max_delivery_attempts=int(env.get("MAX_DELIVERY_ATTEMPTS", cls.max_delivery_attempts)),
                sweep_schedule=env.get("SWEEP_SCHEDULE", ""),
                particle_rate_limit=int(env.get("PARTICLE_RATE_LIMIT", cls.particle_rate_limit)),
                particle_rate_window=float(env.get("PARTICLE_RATE_WINDOW", cls.particle_rate_window)),
                particle_rate_share=float(env.get("PARTICLE_RATE_SHARE", cls.particle_rate_share)),
                particle_rate_clients=int(env.get("PARTICLE_RATE_CLIENTS", cls.particle_rate_clients)),
            )
        except ValueError as exc:
            raise ConfigurationError(f"malformed numeric setting: {exc}") from exc
        if settings.particle_ledger_scope not in LEDGER_SCOPES:
            raise ConfigurationError(
                f"PARTICLE_LEDGER_SCOPE must be one of {', '.join(LEDGER_SCOPES)}, "
                f"not {settings.particle_ledger_scope!r}"
            )
        if settings.particle_ledger_scope == "org" and not settings.particle_org:
            raise ConfigurationError("PARTICLE_LEDGER_SCOPE=org needs PARTICLE_ORG")
        return settings

    def require(self, *names: str) -> None:
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            raise ConfigurationError(f"missing settings: {', '.join(n.upper() for n in missing)}")


_RATE = re.compile(r"rate\(\s*(\d+(?:\.\d+)?)\s+(second|minute|hour|day)s?\s*\)")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def pass_interval(schedule: str) -> float:
    """The least time between the starts of two sweep passes for a schedule: its period, less a
    minute (at most half the period) for the tick's jitter; 0 (no pacing) for a cron expression or
    none. EventBridge Scheduler's rate expressions are ``rate(value unit)`` in minutes, hours or
    days, and every schedule "invokes its targets with 60 second precision"
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html), so two ticks of
    ``rate(10 minutes)`` may come up to 59 s closer than ten minutes. ``seconds`` is accepted for
    the local stack, whose schedule ticks every few seconds."""
    match = _RATE.fullmatch(schedule.strip())
    if not match:
        return 0.0
    period = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return period - min(60.0, period / 2)


@cache
def settings() -> Settings:
    return Settings.from_env()


def secret(name: str) -> str:
    """A decrypted SSM SecureString, cached across invocations of a warm function."""
    # Imported here: the Parameters utility imports boto3 at once (about 150 ms of a cold start,
    # bench/README.md), and only the functions that read a secret need it, at their first call.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_parameter(name, decrypt=True, max_age=SECRET_MAX_AGE)
    if not value:
        raise ConfigurationError(f"SSM parameter {name} is empty")
    return str(value)
