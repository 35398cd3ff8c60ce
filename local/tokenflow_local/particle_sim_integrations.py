"""The Particle simulator's webhook integrations: device events forwarded through a webhook template.

As Particle's webhook reference describes (https://docs.particle.io/reference/cloud-apis/webhooks/):
an event triggers a webhook when its name starts with the webhook's ``event``; the template's
``{{variable}}`` (and ``{{{variable}}}``) placeholders are filled with the pre-defined variables
(``PARTICLE_DEVICE_ID``, ``PARTICLE_EVENT_NAME``, ``PARTICLE_EVENT_VALUE``, ``PARTICLE_PUBLISHED_AT``)
and, when the event data is a JSON object, with its top-level keys; an unknown variable renders
empty. A ``GET`` webhook sends its ``query`` as the query string.

The local stack loads firmware/integrations/blynk_https_get.json as it is, with its
``https://{{BLYNK_REGION}}.blynk.cloud`` replaced by the Blynk simulator's address for the stack's
region (what an operator does by hand, firmware/README.md step 4). Answers are counted by status,
never logged: the query holds the AuthToken.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import requests

_VARIABLE = re.compile(r"\{\{\{?\s*([A-Za-z0-9_]+)\s*\}?\}\}")
BLYNK_HOST = "https://{{BLYNK_REGION}}.blynk.cloud"


def render(template: str, variables: dict[str, str]) -> str:
    """Mustache-style: each ``{{name}}`` by its value, an unknown name by nothing."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), ""), template)


class Integration:
    """One webhook template (the JSON an operator pastes in the Console), bound to a base URL."""

    def __init__(self, definition: dict[str, Any], host: str | None = None) -> None:
        self.event = str(definition.get("event") or definition.get("eventName") or "")
        url = str(definition["url"])
        if host is not None:
            url = url.replace(BLYNK_HOST, host.rstrip("/"))
        self.url = url
        self.method = str(definition.get("requestType", "POST")).upper()
        self.query: dict[str, str] = {str(k): str(v) for k, v in (definition.get("query") or {}).items()}

    @classmethod
    def from_file(cls, path: Path, host: str | None = None) -> Integration:
        return cls(json.loads(path.read_text()), host)

    def matches(self, event: str) -> bool:
        return bool(self.event) and event.startswith(self.event)

    def request(self, device_id: str, event: str, data: str, published_at: str) -> tuple[str, dict[str, str]]:
        """The URL and query Particle would send for this event."""
        variables = {
            "PARTICLE_DEVICE_ID": device_id,
            "PARTICLE_EVENT_NAME": event,
            "PARTICLE_EVENT_VALUE": data,
            "PARTICLE_PUBLISHED_AT": published_at,
        }
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            variables.update({str(k): str(v) for k, v in parsed.items() if not isinstance(v, dict | list)})
        query = {name: render(value, variables) for name, value in self.query.items()}
        return render(self.url, variables), query


class Integrations:
    """The product's integrations; ``publish`` forwards an event to every one it triggers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hooks: list[Integration] = []
        self.answers: dict[int, int] = {}  # status (0: no answer) -> count
        self.session = requests.Session()

    def add(self, integration: Integration) -> None:
        with self.lock:
            self.hooks.append(integration)

    def publish(self, device_id: str, event: str, data: str, published_at: str) -> int:
        """Forward the event; the number of webhooks it triggered."""
        with self.lock:
            hooks = [h for h in self.hooks if h.matches(event)]
        for hook in hooks:
            url, query = hook.request(device_id, event, data, published_at)
            try:
                # Whether Particle's webhook follows a 308 is not documented: here it does not, so data
                # sent to the wrong Blynk region is lost (what the verification pass must catch).
                response = self.session.request(
                    hook.method, url, params=query, timeout=10, allow_redirects=False
                )
                status = response.status_code
            except requests.RequestException:
                status = 0
            with self.lock:
                self.answers[status] = self.answers.get(status, 0) + 1
        return len(hooks)
