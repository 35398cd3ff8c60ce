"""The local stack as the end-to-end tests start it: free ports, short intervals, 25 devices over 3
pages with one quarantined."""

from __future__ import annotations

from typing import Any

from tokenflow_local.stack import LocalStack

DEVICES, QUARANTINED = 25, 1


def local_stack(**options: Any) -> LocalStack:
    """A LocalStack on free ports that runs the story in seconds; ``options`` override the defaults."""
    defaults: dict[str, Any] = {
        "aws_port": 0,
        "api_port": 0,
        "particle_port": 0,
        "devices": DEVICES,
        "quarantined": QUARANTINED,
        "devices_per_page": 10,
        "sweep_interval": 1.0,
        "poll_interval": 0.2,
        "retry_delay": 1,
        "device_interval": 0.3,
        "device_first_retry": 1.0,
        "device_max_retry": 3.0,
    }
    return LocalStack(**{**defaults, **options})
