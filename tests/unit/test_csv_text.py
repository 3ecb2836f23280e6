"""DecodedLines and detect_encoding: BOMs, declared encodings, detection and its refusals."""

from __future__ import annotations

import io

import pytest

from dialerd.errors import InvalidCsv, InvalidInput
from dialerd.services.csv_text import DecodedLines, detect_encoding, text_codec


def lines(data: bytes, declared: str | None = None) -> tuple[DecodedLines, list[str]]:
    decoded = DecodedLines(io.BytesIO(data), declared)
    return decoded, list(decoded)


@pytest.mark.parametrize(
    ("bom", "codec"),
    [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
     (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be")],
)  # fmt: skip
def test_bom_picks_the_encoding_and_is_not_text(bom: bytes, codec: str) -> None:
    decoded, text = lines(bom + "phone\r\n+1 415\rZoë\n".encode(codec))
    assert (decoded.encoding, decoded.source) == (codec, "bom")
    assert text == ["phone\r\n", "+1 415\r", "Zoë\n"]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_recognised_from_its_nul_bytes(codec: str) -> None:
    decoded, text = lines("phone\tname\r\n+14155550142\tAnn\r\n".encode(codec))
    assert (decoded.encoding, decoded.source) == (codec, "detected")
    assert text == ["phone\tname\r\n", "+14155550142\tAnn\r\n"]


def test_declared_encoding_is_used_and_normalised() -> None:
    decoded, text = lines("Имя\n".encode("cp1251"), "Windows-1251")
    assert (decoded.encoding, decoded.source, text) == ("cp1251", "declared", ["Имя\n"])
    assert text_codec("Latin-1") == "iso8859-1"
    for bad in ("klingon", "base64", "rot13", "utf-8\x00"):
        with pytest.raises(InvalidInput):
            text_codec(bad)


def test_declared_encoding_must_agree_with_a_bom() -> None:
    assert lines(b"\xff\xfe" + "a\n".encode("utf-16-le"), "utf-16")[0].encoding == "utf-16-le"
    assert lines(b"\xef\xbb\xbfa\n", "UTF8")[1] == ["a\n"]
    with pytest.raises(InvalidCsv) as caught:
        DecodedLines(io.BytesIO(b"\xff\xfea\x00"), "cp1252")
    assert caught.value.error_id == "csv_encoding_conflict"


def test_lines_split_across_chunks_keep_crlf_and_multibyte_characters_whole() -> None:
    # 16 KiB chunks: put a CRLF and a 3-byte character across every boundary.
    row = "+14155550142,\u20ac\r\n".encode()
    data = b"phone,x\r\n" + row * 5000
    decoded, text = lines(data)
    assert decoded.encoding == "utf-8" and len(text) == 5001
    assert set(text[1:]) == {"+14155550142,€\r\n"}


def test_declared_encoding_error_names_the_line() -> None:
    with pytest.raises(InvalidCsv) as caught:
        lines(b"phone\n+1\n\x81\n", "cp1252")
    assert (caught.value.error_id, caught.value.details["line"]) == ("csv_bad_encoding", 3)
    assert "0x81" in caught.value.message and "'encoding'" in caught.value.message


def test_utf16_error_names_the_line() -> None:
    data = b"\xff\xfe" + "a\nb\n".encode("utf-16-le") + b"\x00\xdc" + "c\n".encode("utf-16-le")  # lone surrogate
    with pytest.raises(InvalidCsv) as caught:
        lines(data)
    assert (caught.value.error_id, caught.value.details["line"]) == ("csv_bad_encoding", 3)


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        ("Prénom;Nom\nJérôme;Dupré\nAnaïs;Lefèvre\nFrançois;Gârçon\n", "cp1252", "cp1252"),
        ("Vorname;Ort\nJürgen;Köln\nGrete;Weiß\n", "cp1252", "cp1252"),
        ("note\n10€ – “ok”\n", "cp1252", "cp1252"),  # typography only
        ("Ann,+14155550142,paid 10€ – “ok” …\n", "cp1252", "cp1252"),
        ("Renée Müller,Café Crème,Søren,Hélène\n", "cp1252", "cp1252"),
        ("Имя,Телефон\nИван Петров,Москва\n", "cp1251", "cp1251"),
        ("Όνομα,Τηλέφωνο\nΓιώργος Παπαδόπουλος\n", "cp1253", "cp1253"),
    ],
)
def test_detection_on_typical_samples(text: str, codec: str, expected: str) -> None:
    assert detect_encoding(text.encode(codec)) == expected


@pytest.mark.parametrize("sample", [b"+14155550143,\x85\xa7\xd4\xf0\xbb", b"+14155550142,\xe9\xfe\xc3\x28\xa0\xa1"])
def test_detection_refuses_when_several_scripts_read_equally_well(sample: bytes) -> None:
    with pytest.raises(InvalidCsv) as caught:
        detect_encoding(sample)
    assert caught.value.error_id == "csv_encoding_unknown"
    assert {"cp1252", "cp1251"} <= set(caught.value.details["candidates"])
    assert "encoding=cp1252" in caught.value.message


def test_detection_reads_only_a_sample_and_the_rest_streams() -> None:
    # The switch from UTF-8 happens at the first non-UTF-8 byte; lines before it are not read twice.
    data = b"phone,name\n" + b"+14155550142,Ann\n" * 3000 + "+14155550143,Zoë\n".encode("cp1252")
    decoded = DecodedLines(io.BytesIO(data))
    text = list(decoded)
    assert (decoded.encoding, decoded.source, text[-1]) == ("cp1252", "detected", "+14155550143,Zoë\n")
    assert len(text) == 3002
