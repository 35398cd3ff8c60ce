"""The export parser over every layout variant and every kind of bad input, on real zip files."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
import zxingcpp
from PIL import Image

from tokenflow.export import ExportReader, ExportRejected, Limits
from tokenflow_local.sample_export import csv_text, make_export, make_tokens

TOKENS = make_tokens(5)


def read_all(data: bytes, name: str = "export.zip", limits: Limits | None = None):
    reader = ExportReader(data, name, limits)
    tokens = [t for batch in reader.batches(2) for t in batch]
    return reader, tokens


def zip_of(entries: dict[str, bytes | str], **kwargs) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content, **kwargs)
    return buffer.getvalue()


def rejected(data: bytes, name: str = "export.zip", limits: Limits | None = None) -> str:
    with pytest.raises(ExportRejected) as caught:
        read_all(data, name, limits)
    return caught.value.reason


# ---- layouts the real export may have ---------------------------------------------------------


def test_sample_export_yields_every_token_with_its_qr_image_and_metadata():
    reader, tokens = read_all(make_export(TOKENS))
    assert [t.token for t in tokens] == [t.token for t in TOKENS]
    assert [t.qr_token for t in tokens] == [t.qr_token for t in TOKENS]
    assert tokens[0].metadata == {
        "Serial Number": TOKENS[0].serial_number,
        "Device Name": TOKENS[0].device_name,
    }
    assert tokens[0].row == 2
    assert all(t.qr_png and t.qr_png.startswith(b"\x89PNG") for t in tokens)
    summary = reader.summary()
    assert summary["rows_read"] == 5
    assert summary["tokens_valid"] == 5
    assert summary["qr_images_matched"] == 5
    assert summary["qr_images_missing"] == 0
    assert summary["problems"] == []


def test_qr_images_decode_to_qr_token_plus_org():
    _, tokens = read_all(make_export(TOKENS[:2], org_id="ORG-77"))
    for t in tokens:
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(t.qr_png)))
        assert [d.text for d in decoded] == [f"{t.qr_token}+ORG-77"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_delimiter_bom_and_line_endings_are_all_understood(delimiter, bom, crlf):
    _, tokens = read_all(make_export(TOKENS, delimiter=delimiter, bom=bom, crlf=crlf))
    assert [t.token for t in tokens] == [t.token for t in TOKENS]
    assert tokens[0].metadata["Serial Number"] == TOKENS[0].serial_number


def test_csv_in_a_nested_folder_with_macos_junk_and_dot_files_is_found():
    csv = csv_text(TOKENS)
    data = zip_of(
        {
            "export/2026/tokens.csv": csv,
            "__MACOSX/export/2026/._tokens.csv": "junk",
            "export/.DS_Store": "junk",
            "export/readme.txt": "hello",
        }
    )
    reader, tokens = read_all(data)
    assert len(tokens) == 5
    assert reader.summary()["csv_entry"] == "export/2026/tokens.csv"
    assert set(reader.summary()["ignored_entries"]) == {
        "__MACOSX/export/2026/._tokens.csv",
        "export/.DS_Store",
        "export/readme.txt",
    }
    assert reader.summary()["qr_images_missing"] == 5


def test_header_case_spacing_quotes_and_extra_columns():
    text = '  device TOKEN ;"Qr_Token";Notes; MAC address \n'
    text += f'"{TOKENS[0].token}";{TOKENS[0].qr_token};"hello; world";aa:bb\n'
    _, tokens = read_all(zip_of({"t.csv": text}))
    assert tokens[0].token == TOKENS[0].token
    assert tokens[0].qr_token == TOKENS[0].qr_token
    assert tokens[0].metadata == {"Notes": "hello; world", "MAC address": "aa:bb"}


def test_bare_csv_upload_without_qr_column():
    text = "Auth Token,Serial Number\n" + "".join(f"{t.token},{t.serial_number}\n" for t in TOKENS)
    reader, tokens = read_all(text.encode(), "tokens.csv")
    assert [t.qr_token for t in tokens] == [None] * 5
    assert reader.summary()["format"] == "csv"


def test_pngs_pair_by_base_name_wherever_they_are():
    png = make_export(TOKENS[:1])
    with zipfile.ZipFile(io.BytesIO(png)) as archive:
        image = archive.read(f"qr/{TOKENS[0].token}.png")
    data = zip_of(
        {
            "a/tokens.csv": csv_text(TOKENS[:2]),
            f"b/c/{TOKENS[0].token}.png": image,
            f"{TOKENS[1].qr_token}.png": image,  # named after the QR Token: paired too
            "orphan.png": image,
        }
    )
    reader, tokens = read_all(data)
    assert tokens[0].qr_png == image
    assert tokens[1].qr_png == image
    assert reader.summary()["qr_images_in_file"] == 3


def test_title_line_above_the_header_is_tolerated():
    text = "Static tokens export\n" + csv_text(TOKENS[:2], crlf=False)
    _, tokens = read_all(zip_of({"t.csv": text}))
    assert len(tokens) == 2
    assert tokens[0].row == 3


# ---- row-level problems: skipped and reported, the rest imported --------------------------------


def test_bad_rows_are_skipped_and_reported_with_row_numbers_and_masked_tokens():
    good = TOKENS[0]
    short = "abc"
    bad_chars = "x" * 31 + "!"
    lines = [
        "Device Token,QR Token,Serial Number",
        f"{good.token},{good.qr_token},S1",  # row 2
        f"{short},,S2",  # row 3: malformed token
        f"{bad_chars},,S3",  # row 4
        f"{TOKENS[1].token},{TOKENS[1].qr_token}",  # row 5: too few fields
        f"{TOKENS[2].token},{TOKENS[2].qr_token},S6,extra",  # row 6: too many
        f"{good.token},,S7",  # row 7: duplicate token
        f"{TOKENS[3].token},sqr_bad,S8",  # row 8: malformed QR token
        f"{TOKENS[4].token},{good.qr_token},S9",  # row 9: duplicate QR token
        ",,S10",  # row 10: no token
        "",
        f"{TOKENS[3].token},,S11",  # row 11 (blank line is not a row): good
    ]
    reader, tokens = read_all(zip_of({"t.csv": "\n".join(lines)}))
    assert [(t.row, t.token) for t in tokens] == [(2, good.token), (11, TOKENS[3].token)]
    summary = reader.summary()
    problems = {p["row"]: p for p in summary["problems"]}
    assert sorted(problems) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "32 characters" in problems[4]["reason"]
    assert "fields" in problems[5]["reason"] and "fields" in problems[6]["reason"]
    assert problems[7]["reason"] == "duplicate AuthToken (first seen in row 2)"
    assert "QR Token" in problems[8]["reason"]
    assert "duplicate QR Token" in problems[9]["reason"]
    assert problems[7]["token"] == f"{good.token[:4]}…{good.token[-4:]}"
    assert summary["duplicates_in_file"] == 2
    assert summary["rows_read"] == 10
    report = repr(summary)
    for t in TOKENS:
        assert t.token not in report


def test_a_huge_field_skips_only_its_row():
    text = (
        csv_text(TOKENS[:2], crlf=False)
        + f'"{"A" * 100_000}",sqr_x,y,z\n'
        + csv_text(TOKENS[2:3]).split("\r\n")[1]
    )
    reader, tokens = read_all(zip_of({"t.csv": text}))
    assert [t.token for t in tokens] == [t.token for t in TOKENS[:3]]
    assert len(reader.summary()["problems"]) == 1
    assert "unreadable row" in reader.summary()["problems"][0]["reason"]


def test_oversized_and_non_png_images_are_left_out_but_the_token_is_kept():
    data = zip_of(
        {
            "t.csv": csv_text(TOKENS[:2]),
            f"qr/{TOKENS[0].token}.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40_000,
            f"qr/{TOKENS[1].token}.png": b"GIF89a not a png",
        }
    )
    reader, tokens = read_all(data)
    assert [t.qr_png for t in tokens] == [None, None]
    left_out = reader.summary()["qr_images_left_out"]
    assert [e["reason"] for e in left_out] == ["QR image larger than 32768 bytes", "QR image is not a PNG"]
    assert reader.summary()["qr_images_missing"] == 2


# ---- structural problems: the whole file is rejected before any write ---------------------------


def test_empty_file_is_rejected():
    assert rejected(b"") == "the file is empty"


def test_not_a_zip_is_rejected():
    assert "not a zip archive" in rejected(b"%PDF-1.7 hello")


def test_truncated_zip_is_rejected():
    data = make_export(TOKENS)
    assert "corrupt or truncated" in rejected(data[: len(data) // 2])


def test_corrupt_entry_is_rejected():
    data = bytearray(zip_of({"t.csv": csv_text(TOKENS) * 50}))
    offset = data.index(b"t.csv") + 5 + 10  # inside the compressed CSV
    data[offset : offset + 20] = b"\xff" * 20
    assert "cannot read t.csv" in rejected(bytes(data)) or "corrupt" in rejected(bytes(data))


def test_encrypted_zip_is_rejected():
    data = bytearray(zip_of({"t.csv": csv_text(TOKENS)}))
    # Set the "encrypted" flag bit in the local and central headers, as a password-protected zip has.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        flags = struct.unpack_from("<H", data, at + flag_offset)[0]
        struct.pack_into("<H", data, at + flag_offset, flags | 1)
    assert "encrypted" in rejected(bytes(data))


def test_zip_bomb_by_ratio_is_rejected():
    data = zip_of({"t.csv": csv_text(TOKENS), "bomb.bin": b"\0" * 20_000_000})
    assert "zip bomb" in rejected(data)


def test_zip_bomb_by_total_size_is_rejected():
    data = zip_of({"t.csv": csv_text(TOKENS), "a.bin": b"\0" * 3000, "b.bin": b"\0" * 3000})
    assert "expands to more than" in rejected(data, limits=Limits(max_uncompressed_bytes=5000))


def test_too_many_entries_is_rejected():
    data = zip_of({f"{n}.txt": "x" for n in range(20)} | {"t.csv": csv_text(TOKENS)})
    assert "entries" in rejected(data, limits=Limits(max_entries=10))


def test_nested_archive_is_rejected():
    data = zip_of({"inner.zip": make_export(TOKENS)})
    assert "another archive" in rejected(data)


def test_no_csv_is_rejected():
    assert "no CSV" in rejected(zip_of({"readme.txt": "hello"}))


def test_several_csvs_are_rejected_naming_them():
    reason = rejected(zip_of({"a.csv": csv_text(TOKENS), "b/b.csv": csv_text(TOKENS)}))
    assert "2 CSV files" in reason and "a.csv" in reason and "b/b.csv" in reason


def test_no_device_token_column_is_rejected():
    assert "no device-token column" in rejected(zip_of({"t.csv": "Serial,Name\nS1,N1\n"}))


def test_header_without_rows_is_rejected():
    assert "no rows" in rejected(zip_of({"t.csv": "Device Token,QR Token\n"}))


def test_empty_csv_is_rejected():
    assert "is empty" in rejected(zip_of({"t.csv": "\n\n"}))


def test_non_utf8_csv_is_rejected_with_its_position():
    text = csv_text(TOKENS[:2]).encode() + "Zürich".encode("latin-1")
    assert "not UTF-8" in rejected(zip_of({"t.csv": text}))


@pytest.mark.parametrize("name", ["../evil.csv", "/abs/t.csv", "a\\..\\t.csv", "C:/t.csv", "a/../../t.csv"])
def test_path_traversal_entry_names_are_rejected(name):
    assert "unsafe entry name" in rejected(zip_of({name: csv_text(TOKENS), "t.csv": csv_text(TOKENS)}))


def test_too_many_rows_is_rejected():
    assert "split the export" in rejected(make_export(TOKENS, with_png=False), limits=Limits(max_rows=3))


def test_batches_keep_memory_to_one_batch_of_images():
    reader = ExportReader(make_export(make_tokens(10), real_qr=False), "e.zip")
    sizes = [len(batch) for batch in reader.batches(4)]
    assert sizes == [4, 4, 2]


def test_zip64_archive_is_listed_through_zipfile_and_read():
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("t.csv", "w", force_zip64=True) as handle,
    ):
        handle.write(csv_text(TOKENS).encode())
    _, tokens = read_all(buffer.getvalue())
    assert [t.token for t in tokens] == [t.token for t in TOKENS]


def test_deflated_png_is_read_and_crc_checked():
    image = zipfile.ZipFile(io.BytesIO(make_export(TOKENS[:1]))).read(f"qr/{TOKENS[0].token}.png")
    data = zip_of({"t.csv": csv_text(TOKENS[:1]), f"{TOKENS[0].token}.png": image})  # deflated
    _, tokens = read_all(data)
    assert tokens[0].qr_png == image


# ---- what the reader says about a file never shows a token whole -------------------------------


def masked(token: str) -> str:
    return f"{token[:4]}…{token[-4:]}"


def test_a_headerless_csv_is_rejected_quoting_its_first_line_masked():
    t = TOKENS[0]
    reason = rejected(f"{t.token},{t.qr_token},SN-1\n".encode(), "tokens.csv")
    assert "no device-token column" in reason and "SN-1" in reason
    assert t.token not in reason and masked(t.token) in reason
    assert t.qr_token not in reason and f"sqr_{masked(t.qr_token[4:])}" in reason


def test_entry_names_carrying_tokens_are_listed_masked():
    a, b, c = TOKENS[:3]
    data = zip_of(
        {
            f"{c.token}.csv": csv_text(TOKENS[:2]),
            f"qr/{a.token}.png": b"\x89PNG\r\n\x1a\n",
            f"qr/copy/{a.token}.png": b"\x89PNG\r\n\x1a\n",  # the same image name again
            f"__MACOSX/qr/._{b.token}.png": b"fork",
        }
    )
    summary = read_all(data)[0].summary()
    assert summary["csv_entry"] == f"{masked(c.token)}.csv"
    assert sorted(summary["ignored_entries"]) == [
        f"__MACOSX/qr/._{b.token[:3]}…{b.token[-4:]}.png",
        f"qr/copy/{masked(a.token)}.png",
    ]
    assert not [t for t in (a.token, b.token, c.token) if t in repr(summary)]


def test_a_rejection_naming_an_entry_masks_the_token_in_it():
    t = TOKENS[0]
    for entries, expected in (
        ({f"{t.token}.zip": b"PK", "t.csv": "x"}, "another archive"),
        ({f"a/{t.token}.csv": "x", "b.csv": "y"}, "2 CSV files"),
    ):
        reason = rejected(zip_of(entries))
        assert expected in reason and masked(t.token) in reason and t.token not in reason


def test_metadata_and_columns_mask_a_token_in_another_column():
    old, new = TOKENS[:2]
    text = f"Device Token,Replaced {old.token}\n{new.token},{old.token}\n"
    reader, [token] = read_all(text.encode(), "t.csv")
    assert token.token == new.token  # the row's own token is whole: it is what gets stored
    assert token.metadata == {f"Replaced {masked(old.token)}": masked(old.token)}
    assert reader.summary()["columns"] == ["Device Token", f"Replaced {masked(old.token)}"]
