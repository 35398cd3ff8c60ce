"""A printable A4 sheet of device labels: a grid of QR images, each with device id, name and serial."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpdf import FPDF

# The common 3 x 8 A4 label sheet (70 x 37 mm labels, no gaps, 4.5 mm top and bottom margins),
# so the PDF prints straight onto stock label paper.
PAGE_W, PAGE_H = 210.0, 297.0
COLUMNS, ROWS = 3, 8
LABEL_W, LABEL_H = 70.0, 37.0
TOP = (PAGE_H - ROWS * LABEL_H) / 2
PADDING = 2.5
QR_SIZE = LABEL_H - 2 * PADDING

NAME_KEYS = ("Device Name", "Name", "device_name", "name")
SERIAL_KEYS = ("Serial Number", "Serial", "serial_number", "serial", "SN")


@dataclass(frozen=True)
class Label:
    device_id: str
    name: str
    serial_number: str
    png: bytes


def _first(metadata: Mapping[str, str], keys: Iterable[str]) -> str:
    lowered = {k.lower(): v for k, v in metadata.items()}
    for key in keys:
        value = metadata.get(key) or lowered.get(key.lower())
        if value:
            return value
    return ""


def label_for(device: Mapping[str, Any], png: bytes) -> Label:
    """The label text of a device: its own name and serial, else the export's columns for its token."""
    metadata = device.get("metadata") or {}
    return Label(
        device_id=device["device_id"],
        name=device.get("name") or _first(metadata, NAME_KEYS),
        serial_number=device.get("serial_number") or _first(metadata, SERIAL_KEYS),
        png=png,
    )


def _latin1(text: str) -> str:
    # The PDF core fonts only know Latin-1; a name in another script prints with '?' instead of failing.
    return text.encode("latin-1", "replace").decode("latin-1")


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` mm in the current font."""
    if pdf.get_string_width(text) <= width:
        return text
    while text and pdf.get_string_width(text + "...") > width:
        text = text[:-1]
    return text + "..."


def render(labels: list[Label]) -> bytes:
    """The PDF bytes: labels fill the grid left to right, top to bottom, as many pages as needed."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_title("Tokenflow device labels")
    per_page = COLUMNS * ROWS
    text_w = LABEL_W - QR_SIZE - 3 * PADDING
    for index, label in enumerate(labels):
        if index % per_page == 0:
            pdf.add_page()
        slot = index % per_page
        x = (slot % COLUMNS) * LABEL_W
        y = TOP + (slot // COLUMNS) * LABEL_H
        pdf.image(io.BytesIO(label.png), x=x + PADDING, y=y + PADDING, w=QR_SIZE, h=QR_SIZE)
        text_x = x + QR_SIZE + 2 * PADDING
        lines = [
            ("B", 9, label.name or "(no name)"),
            ("", 8, f"SN {label.serial_number}" if label.serial_number else "SN -"),
            ("", 6, label.device_id),
        ]
        line_y = y + PADDING + 4
        for style, size, text in lines:
            pdf.set_font("Helvetica", style, size)
            pdf.text(text_x, line_y, _fit(pdf, _latin1(text), text_w))
            line_y += size * 0.5 + 2
    if not labels:
        pdf.add_page()
        pdf.set_font("Helvetica", "", 10)
        pdf.text(20, 20, "No labels to print.")
    return bytes(pdf.output())


def write(labels: list[Label], path: Path) -> None:
    path.write_bytes(render(labels))
