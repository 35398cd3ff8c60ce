"""Plain-text views of the API's answers: aligned columns that read well and grep well."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DASH = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as '-'."""
    cells = [[DASH if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name  value`` lines, names aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {DASH if v is None or v == '' else v}" for k, v in pairs)


def when(value: str | None) -> str | None:
    """An ISO timestamp to the second, readable: 2024-05-01T10:11:12.345+00:00 -> 2024-05-01 10:11:12."""
    if not value:
        return None
    return value.replace("T", " ")[:19]


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def summary(data: Mapping[str, Any]) -> str:
    parts = [
        "TOKENS",
        *(f"  {state:<12}{count}" for state, count in data.get("tokens", {}).items()),
        "DEVICES",
        *(f"  {state:<12}{count}" for state, count in data.get("devices", {}).items()),
        f"LOW STOCK     {yes_no(data.get('low_stock'))} (threshold {data.get('low_stock_threshold')})",
    ]
    paused = data.get("paused")
    if paused:  # the first thing an operator must fix: no device is served meanwhile
        parts.append(f"PAUSED        since {when(paused.get('since'))}: {paused.get('reason')}")
    parts += liveness(data.get("liveness"))
    imports = data.get("recent_imports") or []
    parts.append("RECENT IMPORTS" + ("" if imports else "  none"))
    if imports:
        rows = [
            [
                i.get("id", "")[:12],
                i.get("status"),
                i.get("tokens_added"),
                when(i.get("finished_at")),
                i.get("source_key"),
            ]
            for i in imports
        ]
        parts.append(_indent(table(["import", "status", "added", "finished", "file"], rows)))
    return "\n".join(parts)


def liveness(block: Mapping[str, Any] | None) -> list[str]:
    """The summary's LIVE IN BLYNK lines: confirmed vs live, and the stragglers by cause."""
    if not block:
        return ["LIVE IN BLYNK  not checked yet (the verification pass has not finished a walk)"]
    lines = [
        f"LIVE IN BLYNK  {block.get('live')} of {block.get('confirmed')} confirmed "
        f"(region {block.get('region')}, datastream {block.get('datastream')}, "
        f"as of {when(block.get('as_of'))})",
        f"  {'waiting':<12}{block.get('waiting')}  (confirmed less than {block.get('after_hours')}h ago)",
        f"  {'not live':<12}{block.get('not_live')}  ({block.get('not_live_percent')}% after "
        f"{block.get('after_hours')}h)",
    ]
    lines += [f"    {cause:<16}{count}" for cause, count in sorted((block.get("causes") or {}).items())]
    return lines


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def token_mask(device: Mapping[str, Any]) -> tuple[str | None, str | None]:
    token = device.get("token") or {}
    return token.get("mask"), token.get("fingerprint")


def devices(items: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for d in items:
        mask, fp = token_mask(d)
        rows.append(
            [
                d.get("device_id"),
                d.get("state"),
                mask,
                fp,
                d.get("name"),
                d.get("serial_number"),
                when(d.get("confirmed_at") or d.get("delivered_at")),
                (d.get("last_error") or d.get("liveness_hint") or "")[:60],
            ]
        )
    headers = ["device", "state", "token", "fingerprint", "name", "serial", "delivered/confirmed", "error"]
    return table(headers, rows)


DEVICE_TIMES = (
    "first_seen_at",
    "assigned_at",
    "delivered_at",
    "confirmed_at",
    "failed_at",
    "retired_at",
    "mismatch_at",
    "redelivered_at",
    "updated_at",
)


def device(d: Mapping[str, Any]) -> str:
    mask, fp = token_mask(d)
    pairs: list[tuple[str, Any]] = [
        ("device", d.get("device_id")),
        ("state", d.get("state")),
        ("name", d.get("name")),
        ("serial", d.get("serial_number")),
        ("platform", d.get("platform_id")),
        ("token", mask),
        ("fingerprint", fp),
        ("token id", (d.get("token") or {}).get("token_id")),
        ("qr token", d.get("qr_token")),
        ("attempts", d.get("attempts")),
        ("last error", d.get("last_error")),
        ("redeliveries", d.get("redeliveries")),
    ]
    for key in ("blynk_check", "blynk_last_seen", "live_at", "liveness_hint"):
        if d.get(key):
            pairs.append((key.replace("_", " "), d[key]))
    for key in ("reported_fingerprint", "previous_token_mask", "transferred_from", "transferred_to"):
        if d.get(key):
            pairs.append((key.replace("_", " "), d[key]))
    pairs += [(k.removesuffix("_at").replace("_", " "), when(d[k])) for k in DEVICE_TIMES if d.get(k)]
    pairs += [(f"  {k}", v) for k, v in (d.get("metadata") or {}).items()]
    return fields(pairs)


def token(t: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [
        ("token", t.get("mask")),
        ("fingerprint", t.get("fingerprint")),
        ("token id", t.get("token_id")),
        ("qr token", t.get("qr_token")),
        ("state", t.get("state")),
        ("device", t.get("device_id")),
        ("import", t.get("import_id")),
        ("import row", t.get("import_row")),
    ]
    for key in ("created_at", "assigned_at", "delivered_at", "confirmed_at", "revoked_at"):
        if t.get(key):
            pairs.append((key.removesuffix("_at"), when(t[key])))
    pairs += [(f"  {k}", v) for k, v in (t.get("metadata") or {}).items()]
    text = fields(pairs)
    history = t.get("history") or []
    if history:
        rows = [[when(e.get("at")), e.get("event"), _extra(e)] for e in history]
        text += "\nHISTORY\n" + _indent(table(["at", "event", "details"], rows))
    return text


def _extra(event: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "event"))


def import_result(i: Mapping[str, Any]) -> str:
    return fields(
        [
            ("import", i.get("import_id")),
            ("file", i.get("source_key")),
            ("status", i.get("status")),
            ("tokens added", i.get("tokens_added")),
            ("already known", i.get("tokens_already_known")),
            ("rows rejected", i.get("rows_rejected")),
            ("reason", i.get("reason")),
            ("finished", when(i.get("finished_at"))),
        ]
    )
