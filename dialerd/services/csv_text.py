"""The bytes of an uploaded contacts file as text lines, in the encoding the file was written in.

``DecodedLines(stream, declared)`` checks the first bytes (refusing binary files whole), picks the
encoding, then iterates the physical lines, decoding incrementally in 16 KiB chunks (memory stays flat
however long the file). Which encoding, in this order:

1. a byte-order mark: UTF-8, UTF-16 (Excel's "Unicode Text") or UTF-32, little- or big-endian;
2. the ``encoding`` form field (any text codec Python knows: ``cp1252``, ``latin-1``, ``utf-16``, ...);
   it must agree with a BOM if there is one;
3. UTF-8. While every byte so far was ASCII, the first byte that is not UTF-8 switches the rest of the
   file to a detected encoding: text already read was ASCII, which reads the same in all of them, so
   nothing is parsed twice. ``charset_normalizer`` ranks the code pages Windows, Excel and Outlook write
   (``DETECTED``) on a sample of the non-ASCII lines ahead. Several code pages often read a short sample
   equally well. A reading that puts letters of another script inside Latin words (``Renйe``, ``Mόller``)
   is dropped first: the mess ratio, averaged over mostly-ASCII lines, barely sees it. When the rest
   agree on the script (all Latin, say), the first of ``DETECTED`` wins, so
   ``cp1252`` (Western Europe and the Americas) is preferred over ``cp1250``; when they read different
   scripts (Latin, Cyrillic, Greek), and charset_normalizer's language check does not settle it, the
   file is refused (``csv_encoding_unknown``) naming the candidates and the ``encoding`` field to send.
   When no code page reads it cleanly but cp1252 shows only typography (smart quotes, dashes, the euro
   sign), cp1252 is taken. A file whose earlier lines held UTF-8 beyond ASCII and then a byte that is not UTF-8 mixes
   encodings: refused (``csv_not_utf8``) with the line.

UTF-16 without a BOM is recognised from its NUL bytes (every other byte, in ASCII text). Lines end
at LF, CRLF or a lone CR (universal newlines; the ends are kept, as ``csv`` wants them).
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from collections.abc import Iterator
from typing import BinaryIO, Final

from charset_normalizer import from_bytes

from dialerd.errors import InvalidCsv, InvalidInput

# The code pages detection chooses from, most preferred first: the Windows "ANSI" code pages that
# Excel's "CSV (Comma delimited)" and Outlook write, by how common they are, then the East Asian ones.
# Mac Roman is left out on purpose: it reads most Latin-1 text without a visible mess and would win
# ties it should not; send encoding=mac_roman for an old Excel for Mac file.
DETECTED: Final[tuple[str, ...]] = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "cp1255", "cp1256", "cp1258", "cp874",
    "cp932", "gbk", "cp949", "big5",
)  # fmt: skip
SCRIPTS: Final = {
    "cp1252": "Western European", "cp1250": "Central European", "cp1251": "Cyrillic", "cp1253": "Greek",
    "cp1254": "Turkish", "cp1257": "Baltic", "cp1255": "Hebrew", "cp1256": "Arabic", "cp1258": "Vietnamese",
    "cp874": "Thai", "cp932": "Japanese", "gbk": "Simplified Chinese", "cp949": "Korean",
    "big5": "Traditional Chinese",
}  # fmt: skip

ENCODING_SOURCES: Final = ("bom", "declared", "utf-8", "detected")
CHUNK: Final = 16 * 1024
SNIFF_BYTES: Final = 8192
SAMPLE_BYTES: Final = 64 * 1024  # non-ASCII lines handed to charset_normalizer
MAX_CHAOS: Final = 0.1  # charset_normalizer's "mess" ratio above which a reading is not believed
TIE: Final = 0.01  # readings this close in mess count as equally good
LANGUAGE_MARGIN: Final = 0.1  # coherence lead that lets the language check settle a tie

EXPORT_HINT: Final = "export or save it as 'CSV UTF-8'"
_BOMS: Final = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# A file that starts like one of these is not a CSV file at all; naming it helps the user more than
# "invalid byte 0x89 on line 1".
_SIGNATURES: Final = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx or OpenDocument workbook?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 .xls workbook"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)


def text_codec(name: str) -> str:
    """Python's canonical name for a text encoding (``Windows-1252`` -> ``cp1252``); InvalidInput if none."""
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        info = None
    # Codecs such as base64 or rot13 are known but turn bytes into bytes (or str into str), not text.
    if info is not None and getattr(info, "_is_text_encoding", True):
        return info.name
    raise InvalidInput(
        f"encoding: {name[:40]!r} is not a text encoding Python knows (e.g. utf-8, cp1252, latin-1, utf-16)",
        error_id="invalid_field",
        field="encoding",
    )


def breaks(text: str) -> int:
    """Line ends (LF, CRLF or a lone CR, as universal newlines counts them) in ``text``."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class DecodedLines:
    """One file's text, line by line; ``encoding`` and ``source`` say how it is read.

    ``source`` is ``bom``, ``declared``, ``utf-8`` (no BOM, valid so far) or ``detected``; it and
    ``encoding`` can change once, while iterating, from ``utf-8`` to ``detected``. Iterating raises
    ``InvalidCsv`` on a byte the encoding cannot read or a NUL character, naming the line. Iterate once.
    """

    def __init__(self, stream: BinaryIO, declared: str | None = None) -> None:
        self._stream = stream
        start = stream.tell()
        head = stream.read(SNIFF_BYTES)
        stream.seek(start)
        if not head:
            raise InvalidCsv("contacts file is empty", error_id="csv_empty")
        bom_codec, bom = next(((codec, mark) for mark, codec in _BOMS if head.startswith(mark)), (None, b""))
        if declared is not None:
            codec = text_codec(declared)
            if bom_codec is not None and not _same_family(codec, bom_codec):
                raise InvalidCsv(
                    f"encoding {declared!r} was sent but the contacts file starts with a {bom_codec[:6].upper()} "
                    f"byte-order mark; send encoding={bom_codec} or leave the field out",
                    error_id="csv_encoding_conflict",
                    encoding=declared,
                    bom=bom_codec,
                )
            self.encoding, self.source = (bom_codec, "bom") if bom_codec else (codec, "declared")
        elif bom_codec is not None:
            self.encoding, self.source = bom_codec, "bom"
        else:
            wide = _utf16_without_bom(head)
            self.encoding, self.source = (wide, "detected") if wide else ("utf-8", "utf-8")
        stream.seek(start + len(bom))
        _refuse_non_text(head[len(bom) :], check_nul="\n".encode(self.encoding) == b"\n")
        self._ascii_so_far = True

    def __iter__(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        read = self._stream.read
        carry = ""  # the text after the last complete line end
        done = 0  # line ends yielded so far
        while True:
            chunk = read(CHUNK)
            final = not chunk
            try:
                text = decoder.decode(chunk, final)
            except UnicodeDecodeError as exc:
                if self.source != "utf-8":
                    raise self._decode_error(exc, done + breaks(carry)) from None
                if not (self._ascii_so_far and exc.object[: exc.start].isascii()):
                    raise self._decode_error(exc, done + breaks(carry), mixed=True) from None
                # Everything before was ASCII: read the rest in the detected encoding instead.
                pending = bytes(exc.object)
                self.encoding = self._detect(pending)
                self.source = "detected"
                decoder = codecs.getincrementaldecoder(self.encoding)("strict")
                try:
                    text = decoder.decode(pending, final)
                except UnicodeDecodeError as again:
                    raise self._decode_error(again, done + breaks(carry)) from None
            else:
                # The decoded text, not the chunk: a chunk may end in the first bytes of a character.
                if self._ascii_so_far and not text.isascii():
                    self._ascii_so_far = False
            nul = text.find("\x00")
            if nul >= 0:
                # The lines before it come out first, so the refusal arrives where the NUL is.
                before = carry + text[:nul]
                cut = max(before.rfind("\n"), before.rfind("\r", 0, len(before) - 1)) + 1
                yield from io.StringIO(before[:cut], newline="")
                line = done + breaks(before) + 1
                raise InvalidCsv(
                    f"contacts file is binary, not text: NUL byte on line {line}", error_id="csv_binary", line=line
                )
            if carry:
                text = carry + text
            # Cut after the last line end; a CR at the very end may be the first half of a CRLF.
            cut = len(text) if final else max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
            carry = text[cut:]
            if cut:
                block = text[:cut]
                yield from io.StringIO(block, newline="")
                done += breaks(block)
            if final:
                return

    def _detect(self, pending: bytes) -> str:
        """The encoding of the rest of the file, from a sample of its non-ASCII lines; refuse if unsure."""
        stream = self._stream
        position = stream.tell()
        sample: list[bytes] = []
        size = 0
        tail = b""
        data = pending
        while True:
            pieces = (tail + data).split(b"\n")
            tail = pieces.pop() if data else b""
            for piece in pieces:
                if not piece.isascii():
                    sample.append(piece)
                    size += len(piece) + 1
            if size >= SAMPLE_BYTES or not data:
                break
            data = stream.read(CHUNK)
        stream.seek(position)
        return detect_encoding(b"\n".join(sample))

    def _decode_error(self, exc: UnicodeDecodeError, line_ends_before: int, *, mixed: bool = False) -> InvalidCsv:
        prefix = exc.object[: exc.start].decode(self.encoding, "replace")
        line = line_ends_before + breaks(prefix) + 1
        byte = f"0x{exc.object[exc.start]:02x}" if exc.start < len(exc.object) else "a truncated character"
        if self.encoding == "utf-8":
            why = " (earlier lines are UTF-8 beyond ASCII, so the file mixes encodings)" if mixed else ""
            return InvalidCsv(
                f"contacts file is not UTF-8: invalid byte {byte} on line {line}{why}; {EXPORT_HINT}",
                error_id="csv_not_utf8",
                line=line,
            )
        how = {"detected": "was detected as", "bom": "has a byte-order mark for"}.get(self.source, "was declared")
        return InvalidCsv(
            f"contacts file {how} {self.encoding} but byte {byte} on line {line} is not {self.encoding}; "
            f"send the file's encoding in the 'encoding' form field, or {EXPORT_HINT}",
            error_id="csv_bad_encoding",
            line=line,
            encoding=self.encoding,
        )


def detect_encoding(sample: bytes) -> str:
    """The code page of ``sample`` (non-ASCII bytes), or InvalidCsv ``csv_encoding_unknown`` if unsure."""
    readings: list[tuple[float, float, str, str | None]] = []  # (mess, coherence, encoding, script)
    mixed: list[tuple[float, float, str, str | None]] = []
    for match in from_bytes(sample, cp_isolation=list(DETECTED), enable_fallback=False):
        # One match stands for every code page that decodes the sample to the same text.
        names = [name for name in DETECTED if name in match.could_be_from_charset] or [match.encoding]
        text = str(match)
        reading = (match.chaos, match.coherence, names[0], _script(text))
        (mixed if _mixes_scripts(text) else readings).append(reading)
    readings = readings or mixed
    best = min((reading[0] for reading in readings), default=1.0)
    if best > MAX_CHAOS and _typographic_only(sample):
        return "cp1252"
    if best > MAX_CHAOS:
        raise _undetected([r[2] for r in sorted(readings)[:3]], tie=False)
    tied = sorted((r for r in readings if r[0] <= best + TIE), key=lambda r: DETECTED.index(r[2]))
    coherence = sorted((r[1] for r in tied), reverse=True)
    if len(tied) > 1 and coherence[0] >= coherence[1] + LANGUAGE_MARGIN:
        return next(r[2] for r in tied if r[1] == coherence[0])
    scripts = {r[3] for r in tied} - {None}  # None: the reading has no letters beyond ASCII, only symbols
    if len(scripts) > 1:
        first_per_script: dict[str | None, str] = {}
        for _mess, _coherence, name, script in tied:
            first_per_script.setdefault(script, name)
        raise _undetected(list(first_per_script.values()), tie=True)
    return tied[0][2]


def _undetected(candidates: list[str], *, tie: bool) -> InvalidCsv:
    named = " or ".join(f"{name} ({SCRIPTS.get(name, name)})" for name in candidates)
    if tie:
        reads = f"it reads equally well as {named}"
    else:
        reads = "no common code page reads it cleanly" + (f" (closest: {named})" if candidates else "")
    return InvalidCsv(
        f"contacts file is not UTF-8 and its encoding cannot be detected with confidence: {reads}; send the "
        "'encoding' form field (e.g. encoding=cp1252 for Excel on Windows in Western Europe and the Americas), "
        f"or {EXPORT_HINT}",
        error_id="csv_encoding_unknown",
        field="encoding",
        candidates=candidates,
    )


def _script(text: str) -> str | None:
    """The script most letters beyond ASCII belong to (``LATIN``, ``CYRILLIC``, ``CJK``...), if any."""
    counts: dict[str, int] = {}
    for char in text:
        if char > "\x7f" and char.isalpha():
            script = unicodedata.name(char, "?").split(" ", 1)[0]
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def _typographic_only(sample: bytes) -> bool:
    """Whether ``sample`` in cp1252 has no letters beyond ASCII, only typography (``€ – “ ” …``).

    Windows' smart quotes, dashes and the euro sign are the most common bytes beyond ASCII in English
    exports; charset_normalizer finds a line of mostly symbols messy in every code page.
    """
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        return False
    extra = [char for char in text if char > "\x7f"]
    return bool(extra) and all(unicodedata.category(char)[0] in "PSZ" for char in extra)


_WORD = re.compile(r"[^\W\d_]+")


def _mixes_scripts(text: str) -> bool:
    """Whether a word has both ASCII letters and letters of a script other than Latin (``Renйe``)."""
    for word in _WORD.findall(text):
        if word.isascii() or not any("a" <= char <= "z" or "A" <= char <= "Z" for char in word):
            continue
        if any(char > "\x7f" and not unicodedata.name(char, "LATIN").startswith("LATIN") for char in word):
            return True
    return False


def _same_family(declared: str, bom: str) -> bool:
    """A BOM agrees with a declared codec: utf-16 with either UTF-16 BOM, utf-8 and utf-8-sig alike."""
    base = declared.replace("-sig", "")
    return bom == base or bom.startswith(base + "-")


def _utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le``/``-be`` when ``head`` is ASCII text in UTF-16 (a NUL in every other byte)."""
    pairs = len(head) // 2
    if pairs < 2:
        return None
    even, odd = head[0 : pairs * 2 : 2], head[1 : pairs * 2 : 2]
    for text, zeros, codec in ((even, odd, "utf-16-le"), (odd, even, "utf-16-be")):
        if zeros.count(0) >= 0.9 * pairs and text.count(0) == 0:
            return codec
    return None


def _refuse_non_text(head: bytes, *, check_nul: bool) -> None:
    """Refuse, from its first bytes, a file that is obviously not text."""
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            raise InvalidCsv(f"contacts file is {kind}, not a CSV file", error_id="csv_binary", line=1)
    if not check_nul:
        return
    # Text never holds NUL; binary data of any size almost always does. Other control characters are
    # left alone: they do turn up in real exports (vertical tabs for in-cell line breaks).
    nul = head.find(b"\x00")
    if nul >= 0:
        line = 1 + _byte_breaks(head[:nul])
        raise InvalidCsv(
            f"contacts file is binary, not text: NUL byte on line {line}", error_id="csv_binary", line=line
        )


def _byte_breaks(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
