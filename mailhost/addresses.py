"""E-mail addresses as the directory keeps them, and address policy templates.

The directory holds ASCII addresses in lower case (RFC 5321 2.4 lets the local part be
case-sensitive; no real deployment relies on it, Exchange included). Policy templates
follow Exchange's syntax: `%g` given name, `%s` surname, `%m` alias, `%d` display name,
`%i` middle initial, and `%<n>g` / `%<n>s` for the first n characters; a template
prefixed `SMTP:` is the primary (reply) address, `smtp:` a secondary one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3 path (256) minus the angle brackets

# RFC 5322 3.2.3 atext, for dot-atom local parts.
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1035 2.3.1, RFC 1123 2.1


class AddressError(ValueError):
    """Not an address the directory can hold; the message says why."""


def normalize_domain(domain: str) -> str:
    name = domain.strip().lower().rstrip(".") if domain.endswith(".") else domain.strip().lower()
    if not name or len(name) > MAX_DOMAIN:
        raise AddressError(f"{domain!r} is not a domain name")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"{domain!r} is not a domain name (letters, digits, hyphens, dots)")
    if labels[-1].isdigit():
        raise AddressError(f"{domain!r} is not a domain name (numeric top-level label)")
    return name


def split_address(address: str) -> tuple[str, str]:
    """Validate `address` as a dot-atom local part at a domain; return it normalized."""
    text = address.strip()
    if len(text) > MAX_ADDRESS or text.count("@") != 1:
        raise AddressError(f"{address!r} is not an e-mail address")
    local, domain = text.rsplit("@", 1)
    check_local_part(local, address)
    return local.lower(), normalize_domain(domain)


def normalize_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}"


def check_local_part(local: str, shown: str) -> None:
    if not local or len(local) > MAX_LOCAL_PART:
        raise AddressError(f"{shown!r}: the local part must be 1 to {MAX_LOCAL_PART} characters")
    if not all(_ATEXT.fullmatch(atom) for atom in local.split(".")):
        raise AddressError(
            f"{shown!r}: the local part may hold letters, digits and !#$%&'*+/=?^_`{{|}}~-"
            " separated by single dots"
        )


# Letters that NFKD does not decompose into ASCII, folded as people write them.
_FOLD_EXTRA = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
        "ł": "l",
        "Ł": "L",
        "ı": "i",
        "ħ": "h",
        "Ħ": "H",
    }
)


def ascii_fold(text: str) -> str:
    """'Zoë Ångström-Łukasz' -> 'Zoe Angstrom-Lukasz'; what has no ASCII form is dropped."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(c for c in decomposed if c.isascii() and not unicodedata.combining(c))


def local_part_from(text: str) -> str:
    """Fold `text` into a valid local part: ASCII, lower case, invalid characters removed."""
    folded = ascii_fold(text).lower()
    kept = "".join(c for c in folded if c == "." or _ATEXT.fullmatch(c))
    return ".".join(part for part in kept.split(".") if part)[:MAX_LOCAL_PART].rstrip(".")


@dataclass(frozen=True, slots=True)
class Template:
    pattern: str  # e.g. "%g.%s@example.com"
    primary: bool

    @classmethod
    def parse(cls, text: str) -> Template:
        """`SMTP:%g.%s@example.com` (primary) or `smtp:...` / bare (secondary)."""
        primary = text.startswith("SMTP:")
        body = text[5:] if text[:5].lower() == "smtp:" else text
        if body.count("@") != 1:
            raise AddressError(f"template {text!r}: expected local-part-template@domain")
        local, domain = body.split("@")
        normalize_domain(domain)
        if not local:
            raise AddressError(f"template {text!r}: empty local part")
        for match in re.finditer(r"%(\d*)(.)", local):
            if match.group(2) not in "gsmdi":
                raise AddressError(
                    f"template {text!r}: unknown variable %{match.group(2)} "
                    "(use %g, %s, %m, %d, %i, %<n>g, %<n>s)"
                )
        return cls(pattern=f"{local}@{domain.lower()}", primary=primary)

    @property
    def domain(self) -> str:
        return self.pattern.rsplit("@", 1)[1]

    def __str__(self) -> str:
        return ("SMTP:" if self.primary else "smtp:") + self.pattern

    def expand(
        self, *, given: str, surname: str, alias: str, display: str, middle: str = ""
    ) -> str | None:
        """The address for one person, or None when the template needs a value they lack."""
        values = {"g": given, "s": surname, "m": alias, "d": display, "i": middle[:1]}
        local_template, domain = self.pattern.rsplit("@", 1)
        missing = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal missing
            count, var = match.group(1), match.group(2)
            value = local_part_from(values[var]).replace(".", "")
            if not value:
                missing = True
            return value[: int(count)] if count else value

        local = re.sub(r"%(\d*)([gsmdi])", substitute, local_template)
        if missing:
            return None
        local = local_part_from(local)
        if not local:
            return None
        return f"{local}@{domain}"
