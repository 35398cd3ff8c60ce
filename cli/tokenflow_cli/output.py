"""Views of the API's answers, drawn with Rich: tables and fields on a terminal, in colour; plain aligned
text everywhere else (a pipe, a file, ``NO_COLOR``), which reads well and greps well.

Each view is a Rich renderable (``summary_view``, ``devices_view``...); the functions without the
suffix (``summary``, ``devices``...) give the same view as plain text. Off a terminal nothing is
wrapped or cut to a width and no line ends in spaces, so a row stays one line for grep, awk and cut.
Progress of long work (uploads, label sheets, a fleet served) is a Rich bar on a terminal and a
single line once done elsewhere, so logs do not fill with carriage returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

DASH = "-"
# Off a terminal there is no width to fit: a row must stay on one line whatever its length.
PLAIN_WIDTH = 1 << 14
HEADER = "bold"
NAME = "bold"
# A state's colour says whether it needs a look: green done, cyan on its way, yellow waiting for
# stock or time, red needs an operator, dim finished with.
STATE_STYLES = {
    "confirmed": "green",
    "live": "green",
    "processed": "green",
    "available": "green",
    "delivered": "cyan",
    "pending": "cyan",
    "assigned": "cyan",
    "clearing": "magenta",
    "waiting": "yellow",
    "processing": "yellow",
    "failed": "bold red",
    "rejected": "bold red",
    "revoked": "red",
    "retired": "dim",
    "released": "dim",
}


# ---- consoles ----------------------------------------------------------------------------------------


def wants_colour(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set to anything but "" (no-color.org)."""
    return _is_tty(stream) and not os.environ.get("NO_COLOR")


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def console_for(stream: IO[str]) -> Console:
    """A Rich console on ``stream``: a terminal's width and colours there, plain and unbounded elsewhere.

    The terminal test is made here, not left to Rich, which would take ``FORCE_COLOR`` or
    ``TTY_COMPATIBLE`` from the environment and put escape codes into a pipe.
    """
    terminal = _is_tty(stream)
    return Console(
        file=stream,
        force_terminal=terminal,
        color_system="auto" if wants_colour(stream) else None,
        no_color=not wants_colour(stream),
        width=None if terminal else PLAIN_WIDTH,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=not terminal,
    )


def render(renderable: RenderableType, console: Console) -> str:
    """``renderable`` as the text ``console`` would print, each line without trailing spaces."""
    with console.capture() as captured:
        console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


def plain(renderable: RenderableType) -> str:
    """The plain-text form of a view (no colour, no width), without the final newline."""
    return render(renderable, console_for(_NoTerminal())).removesuffix("\n")


class _NoTerminal:
    """A stream that is not a terminal, for rendering plain text (``plain`` never writes to it)."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def as_renderable(view: RenderableType | str) -> RenderableType:
    # A str from a one-line view is shown as it is: no Rich markup, no highlighting of numbers.
    return Text(view) if isinstance(view, str) else view


# ---- progress ----------------------------------------------------------------------------------------


class Bar:
    """Progress of countable work (bytes or items) on stderr.

    On a terminal a Rich bar with the count, rate and time; elsewhere nothing until the work is done,
    then one line (``final(done, total)``). ``advance`` is thread-safe: boto3's upload calls it from
    its transfer threads.
    """

    def __init__(
        self,
        console: Console,
        label: str,
        total: int,
        *,
        transfer: bool = False,
        final: Callable[[int, int], str] | None = None,
    ) -> None:
        self.console = console
        self.label = label
        self.total = total
        self.done = 0
        self.final = final or (lambda done, total: f"{label}: {done}/{total}")
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: Any = None
        if console.is_terminal:
            counts = (DownloadColumn(), TransferSpeedColumn()) if transfer else (MofNCompleteColumn(),)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                *counts,
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self, amount: int = 1) -> None:
        with self._lock:
            self.done += amount
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count (and the total, when the work grows or shrinks as it goes)."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=self.total)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif kind is None:
            self.console.file.write(self.final(self.done, self.total) + "\n")
            self.console.file.flush()


@contextmanager
def waiting(console: Console, message: str) -> Iterator[None]:
    """A spinner with ``message`` on a terminal while the block runs; the message as one line elsewhere."""
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        console.file.write(message + "\n")
        console.file.flush()
        yield


# ---- building blocks ---------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return DASH if value is None or value == "" else str(value)


def state_text(state: Any) -> Text:
    """A state name in its colour."""
    return Text(_cell(state), style=STATE_STYLES.get(str(state), ""))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, wrap: Collection[str] = ()) -> Table:
    """Left-aligned columns two spaces apart, upper-case headers, no borders; None shows as '-'.

    A column named "state" or "status" is coloured by its value. On a terminal too narrow for the
    whole table, the ``wrap`` columns (free text) wrap and the others keep their full width: an id
    cut short would name nothing.
    """
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style=HEADER)
    cells = [[_cell(v) for v in row] for row in rows]
    for n, header in enumerate(headers):
        if header in wrap:
            grid.add_column(header.upper(), overflow="fold")
        else:
            widest = max([len(header), *(len(row[n]) for row in cells)])
            grid.add_column(header.upper(), no_wrap=True, min_width=widest)
    coloured = {i for i, h in enumerate(headers) if h in ("state", "status")}
    for row in cells:
        grid.add_row(*(state_text(v) if i in coloured else Text(v) for i, v in enumerate(row)))
    return grid


def fields(pairs: Sequence[tuple[str, Any]]) -> Text:
    """``name  value`` lines, names aligned (and bold on a terminal); a state or status in its colour."""
    width = max((len(k) for k, _ in pairs), default=0)
    text = Text()
    for n, (key, value) in enumerate(pairs):
        if n:
            text.append("\n")
        text.append(key.ljust(width), style=NAME)
        text.append("  ")
        if key in ("state", "status"):
            text.append_text(state_text(value))
        else:
            text.append(_cell(value))
    return text


def _indent(renderable: RenderableType) -> Padding:
    return Padding(renderable, (0, 0, 0, 2), expand=False)


def when(value: str | None) -> str | None:
    """An ISO timestamp to the second, readable: 2024-05-01T10:11:12.345+00:00 -> 2024-05-01 10:11:12."""
    if not value:
        return None
    return value.replace("T", " ")[:19]


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


# ---- summary -----------------------------------------------------------------------------------------


def summary_view(data: Mapping[str, Any]) -> Group:
    parts: list[RenderableType] = [Text("TOKENS", style=HEADER)]
    parts += [_count(state, count) for state, count in data.get("tokens", {}).items()]
    parts.append(Text("DEVICES", style=HEADER))
    parts += [_count(state, count) for state, count in data.get("devices", {}).items()]
    low = data.get("low_stock")
    parts.append(
        Text.assemble(
            ("LOW STOCK", HEADER),
            "     ",
            (yes_no(low), "bold yellow" if low else "green"),
            f" (threshold {data.get('low_stock_threshold')})",
        )
    )
    paused = data.get("paused")
    if paused:  # the first thing an operator must fix: no device is served meanwhile
        parts.append(
            Text(f"PAUSED        since {when(paused.get('since'))}: {paused.get('reason')}", style="bold red")
        )
    parts += [Text(line) for line in liveness(data.get("liveness"))]
    imports = data.get("recent_imports") or []
    parts.append(Text("RECENT IMPORTS" + ("" if imports else "  none"), style=HEADER))
    if imports:
        parts.append(_indent(imports_table(imports, brief=True)))
    return Group(*parts)


def summary(data: Mapping[str, Any]) -> str:
    return plain(summary_view(data))


def _count(state: str, count: Any) -> Text:
    return Text.assemble("  ", (f"{state:<12}", STATE_STYLES.get(state, "")), str(count))


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


# ---- imports -----------------------------------------------------------------------------------------


def imports_table(items: Sequence[Mapping[str, Any]], *, brief: bool = False) -> Table:
    """Imports, newest first: the id's first 12 characters (what ``tokenflow imports ID`` takes).

    ``brief``: the summary's recent imports, which carry no known or rejected counts.
    """
    counts = ("tokens_added",) if brief else ("tokens_added", "tokens_already_known", "rows_rejected")
    rows = [
        [
            (i.get("import_id") or i.get("id") or "")[:12],
            i.get("status"),
            *(i.get(c) for c in counts),
            when(i.get("finished_at")),
            i.get("source_key"),
        ]
        for i in items
    ]
    headers = ["import", "status", "added", *(() if brief else ("known", "rejected")), "finished", "file"]
    return table(headers, rows, wrap=("file",))


def imports(data: Mapping[str, Any]) -> str:
    return plain(imports_table(data.get("imports") or []))


def import_result_view(i: Mapping[str, Any]) -> RenderableType:
    """One import: its counts and, when the answer holds its report, the rejected rows (tokens masked)."""
    pairs = fields(
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
    report = i.get("report") or {}
    problems = report.get("problems") or []
    if not problems:
        return pairs
    rows = [[p.get("row"), p.get("token"), p.get("reason")] for p in problems if isinstance(p, Mapping)]
    title = "REJECTED ROWS"
    if report.get("problems_truncated"):
        title += " (the first ones: the report keeps no more)"
    rejected = table(["row", "token", "reason"], rows, wrap=("reason",))
    return Group(pairs, Text(title, style=HEADER), _indent(rejected))


def import_result(i: Mapping[str, Any]) -> str:
    return plain(import_result_view(i))


# ---- devices and tokens ------------------------------------------------------------------------------

# The export's columns a label prints when the device has no name or serial of its own.
NAME_KEYS = ("Device Name", "Name", "device_name", "name")
SERIAL_KEYS = ("Serial Number", "Serial", "serial_number", "serial", "SN")


def _column(metadata: Mapping[str, Any], keys: Sequence[str]) -> Any:
    lowered = {str(k).lower(): v for k, v in metadata.items()}
    return next((lowered[k.lower()] for k in keys if lowered.get(k.lower())), None)


def token_mask(device: Mapping[str, Any]) -> tuple[str | None, str | None]:
    token = device.get("token") or {}
    return token.get("mask"), token.get("fingerprint")


def devices_view(items: Sequence[Mapping[str, Any]]) -> Table:
    """One row per device: its token (masked), QR token, name and serial (the export's columns when
    Particle has none), when it was last served, and what is wrong."""
    rows = []
    for d in items:
        mask, fp = token_mask(d)
        metadata = d.get("metadata") or {}
        rows.append(
            [
                d.get("device_id"),
                d.get("state"),
                mask,
                fp,
                d.get("qr_token"),
                d.get("name") or _column(metadata, NAME_KEYS),
                d.get("serial_number") or _column(metadata, SERIAL_KEYS),
                when(d.get("confirmed_at") or d.get("delivered_at")),
                (d.get("last_error") or d.get("liveness_hint") or "")[:60],
            ]
        )
    headers = [
        "device",
        "state",
        "token",
        "fingerprint",
        "qr token",
        "name",
        "serial",
        "delivered/confirmed",
        "error",
    ]
    return table(headers, rows, wrap=("name", "error"))


def devices(items: Sequence[Mapping[str, Any]]) -> str:
    return plain(devices_view(items))


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


def device_view(d: Mapping[str, Any]) -> Text:
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


def device(d: Mapping[str, Any]) -> str:
    return plain(device_view(d))


def token_view(t: Mapping[str, Any]) -> RenderableType:
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
    history = t.get("history") or []
    if not history:
        return fields(pairs)
    rows = [[when(e.get("at")), e.get("event"), _extra(e)] for e in history]
    events = table(["at", "event", "details"], rows, wrap=("details",))
    return Group(fields(pairs), Text("HISTORY", style=HEADER), _indent(events))


def token(t: Mapping[str, Any]) -> str:
    return plain(token_view(t))


def _extra(event: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "event"))
