"""The local stack's state on disk, so that it survives a restart of ``make run``.

What a deployed Tokenflow keeps lives in AWS and in the Particle Cloud; on the local stack both are
in this process (moto, the Particle and Blynk simulators) and would be lost when it stops. When the
stack has a ``state_dir``, ``save`` writes at ``stop()`` and ``restore`` reads at ``start()``:

- the embedded AWS, through its own APIs where they give everything back unchanged: every item of
  the table (Scan), every object of the bucket with its content type and metadata; and the SQS
  messages of the stack's queues from moto's own queue objects (a ReceiveMessage would count as a
  receive and hide them), with their receive counts, send times and visibility, read and put back in
  moto's own process (this one, or its own: ``aws_process``);
- the stack's two secrets (the Particle access token the simulator accepts and the webhook secret),
  so the SSM SecureStrings, the simulator and the devices agree again;
- the Particle simulator's product fleet, the cloud's Ledger instances and each device's own flash
  copies (``particle_sim_device_os``), and the Blynk simulator's tokens and pin values.

The simulated devices themselves start again as after a power cycle: they read their Ledger copy
from flash and report it. Nothing is imported or assigned again: the restored table already holds
every import, token and device, and the notification that would start ingest is not sent for
restored objects (only an object still under ``incoming/``, whose import never finished, is handed
to ingest again, as Lambda's queue of asynchronous events would have kept it).

The state is written only by a clean stop (Ctrl-C, SIGTERM, the end of ``--exit-when-done``): a
stack killed with SIGKILL, or a machine that loses power, keeps the state of its previous clean
stop. The files are pickles written by this code for this code (``FORMAT``): another format
version is refused with a message, not half-read.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
AWS_FILE = "aws.pickle"
SIMULATORS_FILE = "simulators.pickle"
SECRETS_FILE = "secrets.json"


class StateError(RuntimeError):
    """The saved state cannot be read back (another format, a damaged file)."""


@dataclass
class Restored:
    """What ``restore`` put back (for the run script's message and the tests)."""

    items: int
    objects: int
    messages: int
    devices: int
    incoming: list[str]


def exists(directory: Path) -> bool:
    return (directory / AWS_FILE).is_file() and (directory / SIMULATORS_FILE).is_file()


def clear(directory: Path) -> None:
    """Forget the saved state (``make run FRESH=1``)."""
    for name in (AWS_FILE, SIMULATORS_FILE, SECRETS_FILE):
        (directory / name).unlink(missing_ok=True)


def load_secrets(directory: Path) -> dict[str, str] | None:
    path = directory / SECRETS_FILE
    if not (exists(directory) and path.is_file()):
        return None
    return dict(json.loads(path.read_text()))


def save(stack: Any, directory: Path) -> None:
    """Write ``stack``'s state (a stopped stack whose moto still holds its data) to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    aws = {
        "format": FORMAT,
        "items": _scan(stack.client("dynamodb"), stack.table),
        "objects": _objects(stack.client("s3"), stack.bucket),
        "messages": _messages(stack.moto, stack.queues),
    }
    particle = stack.simulator
    blynk = stack.blynk
    with particle.lock:
        simulators = {
            "format": FORMAT,
            "particle": {
                "fleet": particle.fleet,
                "ledgers": particle.ledgers,
                "device_side": particle.device_side,
                "serial": particle._serial,
            },
            "blynk": {"tokens": dict(blynk.tokens), "values": dict(blynk.values)} if blynk else None,
        }
        _write(directory / SIMULATORS_FILE, pickle.dumps(simulators))
    _write(directory / AWS_FILE, pickle.dumps(aws))
    _write(
        directory / SECRETS_FILE,
        json.dumps({"particle_token": stack.particle_token, "webhook_secret": stack.webhook_secret}),
    )


def restore_simulators(stack: Any, directory: Path) -> int:
    """Put the saved fleet, Ledgers and Blynk tokens back (before the simulators serve); devices."""
    state = _read(directory / SIMULATORS_FILE)
    particle = stack.simulator
    with particle.lock:
        particle.fleet.clear()
        particle.fleet.update(state["particle"]["fleet"])
        particle.ledgers.clear()
        particle.ledgers.update(state["particle"]["ledgers"])
        particle.device_side.clear()
        particle.device_side.update(state["particle"]["device_side"])
        particle._serial = state["particle"]["serial"]
    if stack.blynk is not None and state.get("blynk"):
        with stack.blynk.lock:
            stack.blynk.tokens.update(state["blynk"]["tokens"])
            stack.blynk.values.update(state["blynk"]["values"])
    return len(particle.fleet)


def restore_aws(stack: Any, directory: Path) -> Restored:
    """Put the saved items, objects and messages back into the freshly created resources (before
    the bucket's notification exists, so no restored object notifies anything)."""
    state = _read(directory / AWS_FILE)
    dynamodb, s3 = stack.client("dynamodb"), stack.client("s3")
    items = state["items"]
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        pending: dict[str, Any] = {stack.table: requests}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    incoming = []
    for obj in state["objects"]:
        extra = {"ContentType": obj["content_type"]} if obj.get("content_type") else {}
        s3.put_object(
            Bucket=stack.bucket, Key=obj["key"], Body=obj["body"], Metadata=obj["metadata"], **extra
        )
        if obj["key"].startswith("incoming/"):
            incoming.append(obj["key"])
    messages = 0
    for logical_id, saved in state["messages"].items():
        url = stack.queues.get(logical_id)
        if not url or not saved:
            continue
        stack.moto.add_messages(url.rsplit("/", 1)[-1], saved)
        messages += len(saved)
    return Restored(len(items), len(state["objects"]), messages, len(stack.simulator.fleet), incoming)


def _scan(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def _objects(client: Any, bucket: str) -> list[dict[str, Any]]:
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            answer = client.get_object(Bucket=bucket, Key=entry["Key"])
            objects.append(
                {
                    "key": entry["Key"],
                    "body": answer["Body"].read(),
                    "content_type": answer.get("ContentType"),
                    "metadata": answer.get("Metadata", {}),
                }
            )
    return objects


def _messages(moto: Any, queues: dict[str, str]) -> dict[str, list[Any]]:
    """Each queue's messages as moto holds them (a receive would count as one and hide them), from
    the stack's embedded AWS, in this process or its own (``aws_process``)."""
    return {logical_id: moto.messages(url.rsplit("/", 1)[-1]) for logical_id, url in queues.items()}


def _write(path: Path, data: bytes | str) -> None:
    """Write whole or not at all: a stop interrupted half-way leaves the previous file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    if isinstance(data, str):
        temporary.write_text(data)
    else:
        temporary.write_bytes(data)
    os.replace(temporary, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        state = pickle.loads(path.read_bytes())  # noqa: S301 (written by save() above, on this machine)
    except Exception as exc:
        raise StateError(
            f"cannot read the saved local state {path}: {exc}. Start clean with FRESH=1."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateError(f"{path} was saved in another format. Start clean with FRESH=1 (make run FRESH=1).")
    return state
