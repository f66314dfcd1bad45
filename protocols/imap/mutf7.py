"""Modified UTF-7 for mailbox names (RFC 3501 5.1.3), strict in both directions.

Decoding refuses everything an encoder following the RFC would never produce: bytes
outside printable US-ASCII, an unterminated or empty-but-not-``&-`` shift, characters
outside the modified BASE64 alphabet, padding bits that are not zero, unpaired
surrogates, and non-minimal encodings such as ``&AC4ALg-`` (which spells ``..`` and is a
classic way to smuggle a path traversal past a filter that looks at the encoded form).
The rule that catches the last family is simply: a name is valid only if re-encoding
what it decodes to gives back the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["MUTF7Error", "decode_mutf7", "encode_mutf7"]


class MUTF7Error(ValueError):
    """The bytes are not a valid (canonical) modified UTF-7 mailbox name."""


# RFC 3501 5.1.3: "printable US-ASCII characters, except for "&", represent themselves",
# i.e. 0x20-0x25 and 0x27-0x7e.
_DIRECT = frozenset(range(0x20, 0x7F)) - {ord("&")}
_B64_CHARS = re.compile(rb"[A-Za-z0-9+,]*")


def encode_mutf7(name: str) -> bytes:
    """Encode a Unicode mailbox name to modified UTF-7 (the canonical, shortest form)."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be", "surrogatepass")
            b64 = base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",")
            out.extend(b"&" + b64 + b"-")
            pending.clear()

    for ch in name:
        code = ord(ch)
        if code in _DIRECT:
            flush()
            out.append(code)
        elif ch == "&":
            flush()
            out.extend(b"&-")  # RFC 3501 5.1.3: "&" is represented by "&-"
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def _decode_shift(b64: bytes) -> str:
    if not b64 or _B64_CHARS.fullmatch(b64) is None:
        raise MUTF7Error("invalid modified BASE64 in shifted sequence")
    bits = len(b64) * 6
    units, leftover = divmod(bits, 16)
    if units == 0 or leftover >= 6:
        raise MUTF7Error("shifted sequence does not hold whole UTF-16 units")
    padded = b64.replace(b",", b"/") + b"=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MUTF7Error("invalid modified BASE64 in shifted sequence") from exc
    # The leftover bits must be zero: compare with the canonical re-encoding below.
    try:
        text = raw[: units * 2].decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUTF7Error("unpaired UTF-16 surrogate") from exc
    return text


def decode_mutf7(data: bytes) -> str:
    """Decode a modified UTF-7 mailbox name; raise :class:`MUTF7Error` unless canonical."""
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        byte = data[i]
        if byte == 0x26:  # "&"
            end = data.find(b"-", i + 1)
            if end < 0:
                raise MUTF7Error("unterminated '&' shift")
            if end == i + 1:
                out.append("&")
            else:
                out.append(_decode_shift(data[i + 1 : end]))
            i = end + 1
        elif byte in _DIRECT:
            out.append(chr(byte))
            i += 1
        else:
            raise MUTF7Error(f"byte 0x{byte:02x} may not appear in a mailbox name")
    text = "".join(out)
    # Non-minimal forms (ASCII spelled in BASE64, split shifts, non-zero padding bits) all
    # fail this test: RFC 3501 5.1.3 "MUST NOT be used to represent any printing US-ASCII
    # character which can represent itself".
    if encode_mutf7(text) != data:
        raise MUTF7Error("not the canonical modified UTF-7 form")
    return text
