"""Units of the foundation: config schema, address folding and templates, passwords, certificates."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs import files
from certs.tls import CertificateError
from mailhost import config, passwords
from mailhost.addresses import (
    AddressError,
    Template,
    ascii_fold,
    local_part_from,
    normalize_address,
)

ROOT = Path(__file__).parents[2]


def test_every_config_key_is_documented_in_the_readme_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for key, default, _doc in config.reference():
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", readme, re.MULTILINE)
        assert row, f"README lacks a row for {key}"
        assert row.group(1) == default, f"README default of {key}: {row.group(1)} != {default}"


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    source = tmp_path / "m.toml"
    ok = config.parse({"hostname": "mail.example.com"}, source=source)
    assert ok.listeners.smtp.port == 25 and ok.listeners.https.port == 443
    assert ok.data_dir == config.PRODUCTION_DATA_DIR
    with pytest.raises(config.ConfigError, match=r"listeners\.imap\.colour: unknown key"):
        config.parse(
            {"hostname": "mail.example.com", "listeners": {"imap": {"colour": 1}}}, source=source
        )
    with pytest.raises(
        config.ConfigError, match=r"listeners\.imap\.enabled: expected a boolean, got an integer"
    ):
        config.parse(
            {"hostname": "mail.example.com", "listeners": {"imap": {"enabled": 1}}}, source=source
        )
    with pytest.raises(config.ConfigError, match="hostname: missing"):
        config.parse({}, source=source)
    with pytest.raises(config.ConfigError, match="hostname: expected a fully qualified name"):
        config.parse({"hostname": "localhost"}, source=source)
    with pytest.raises(config.ConfigError, match="tls: expected a table"):
        config.parse({"hostname": "mail.example.com", "tls": 3}, source=source)
    relative = config.parse({"hostname": "mail.example.com", "data_dir": "data"}, source=source)
    assert relative.data_dir == tmp_path.resolve() / "data"
    # Recipients per message: the RFC 5321 minimum up to what one queue envelope holds
    # (below it every SMTP session would fail; above it a message could be accepted for
    # recipients the queue then refuses).
    for bad in (99, 1001):
        with pytest.raises(config.ConfigError, match=r"smtp\.max_recipients: want 100 to 1000"):
            config.parse(
                {"hostname": "mail.example.com", "smtp": {"max_recipients": bad}}, source=source
            )
    for good in (100, 1000):
        smtp = {"max_recipients": good}
        assert config.parse({"hostname": "mail.example.com", "smtp": smtp}, source=source)
    # What the queue runner holds in flight: the default is the runner's own bound.
    from mailhost.service import _delivery_settings
    from transport.delivery import MAX_ACTIVE_BYTES

    assert _delivery_settings(ok).max_active_bytes == MAX_ACTIVE_BYTES
    queue = {"max_active_mib": 8}
    small = config.parse({"hostname": "mail.example.com", "queue": queue}, source=source)
    assert _delivery_settings(small).max_active_bytes == 8 * 1024 * 1024
    with pytest.raises(config.ConfigError, match=r"queue\.max_active_mib: must be at least 1"):
        config.parse(
            {"hostname": "mail.example.com", "queue": {"max_active_mib": 0}}, source=source
        )


def test_rendered_config_parses_back_to_the_same_settings(tmp_path: Path) -> None:
    import tomllib

    original = config.with_listeners(
        config.Config(hostname="mail.example.com", data_dir=tmp_path),
        address="127.0.0.1",
        port_offset=10000,
    )
    text = config.render(original, data_dir_text='"."')
    parsed = config.parse(tomllib.loads(text), source=tmp_path / "mailhost.toml")
    assert parsed.listeners == original.listeners
    assert parsed.service == original.service and parsed.tls == original.tls


@pytest.mark.parametrize(
    ("text", "folded"),
    [("Zoë", "Zoe"), ("Ångström", "Angstrom"), ("Łukasz", "Lukasz"), ("Straße", "Strasse"),
     ("Søren", "Soren"), ("Æsir", "AEsir"), ("François", "Francois"), ("Ðorđe", "Dorde")],
)  # fmt: skip
def test_ascii_fold(text: str, folded: str) -> None:
    assert ascii_fold(text) == folded


def test_local_part_from_drops_what_an_address_cannot_hold() -> None:
    assert local_part_from("Mary Ann O'Neil") == "maryanno'neil"
    assert local_part_from("..dots..here..") == "dots.here"
    assert local_part_from("日本") == ""
    assert len(local_part_from("x" * 200)) == 64


def test_templates_expand_like_exchange() -> None:
    person = {"given": "Zoë", "surname": "Ångström", "alias": "zoe", "display": "Zoë Ångström"}
    assert Template.parse("SMTP:%g.%s@Example.COM").expand(**person) == "zoe.angstrom@example.com"
    assert Template.parse("smtp:%1g%s@example.com").expand(**person) == "zangstrom@example.com"
    assert Template.parse("%m@example.com").expand(**person) == "zoe@example.com"
    assert Template.parse("%3s.%2g@example.com").expand(**person) == "ang.zo@example.com"
    assert (
        Template.parse("%g.%s@example.com").expand(given="", surname="x", alias="a", display="")
        is None
    )
    assert str(Template.parse("SMTP:%g@example.com")) == "SMTP:%g@example.com"


@pytest.mark.parametrize(
    "bad",
    ["plain", "a@b@c.com", "a..b@example.com", ".a@example.com", "a@-x.com", "a@example", "a b@example.com",
     "a@example.123", f"{'x' * 65}@example.com", "a@" + "x" * 250 + ".com"],
)  # fmt: skip
def test_addresses_the_directory_refuses(bad: str) -> None:
    with pytest.raises(AddressError):
        normalize_address(bad)


def test_normalize_address() -> None:
    assert normalize_address(" John.Smith@Example.COM ") == "john.smith@example.com"
    assert normalize_address("o'neil+tag@sub.example.co.uk") == "o'neil+tag@sub.example.co.uk"


def test_password_hash_is_argon2id_and_verifies() -> None:
    encoded = passwords.hash_password("correct horse")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password("correct horse", encoded)
    assert not passwords.verify_password("wrong", encoded)
    assert not passwords.verify_password("x" * (passwords.MAX_PASSWORD_BYTES + 1), encoded)
    assert not passwords.verify_password("x", "$argon2id$garbage")


def test_verified_credentials_cache_expires_and_follows_the_hash() -> None:
    now = [0.0]
    cache = passwords.VerifiedCredentials(ttl=60, clock=lambda: now[0])
    cache.remember(1, "hash-a", "pw")
    assert cache.check(1, "hash-a", "pw")
    assert not cache.check(1, "hash-a", "other")
    assert not cache.check(1, "hash-b", "pw")  # password changed: new stored hash
    assert not cache.check(2, "hash-a", "pw")
    now[0] = 61
    assert not cache.check(1, "hash-a", "pw")


def _write_chain(path: Path, certs: list[x509.Certificate]) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def test_import_refuses_a_chain_out_of_order(tmp_path: Path) -> None:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("mail.example.com")
    pems = [x509.load_pem_x509_certificate(b.bytes()) for b in leaf.cert_chain_pems]
    pems.append(x509.load_pem_x509_certificate(ca.cert_pem.bytes()))
    assert len(pems) == 3  # leaf, intermediate, root
    key = tmp_path / "key.pem"
    key.write_bytes(leaf.private_key_pem.bytes())
    good = tmp_path / "good.pem"
    _write_chain(good, pems)
    info, warnings, _, _ = files.check_import(good, key)
    assert info.chain_length == len(pems) and not warnings
    swapped = tmp_path / "swapped.pem"
    _write_chain(swapped, [pems[0], *reversed(pems[1:])])
    with pytest.raises(CertificateError, match="is not issued by certificate 2"):
        files.check_import(swapped, key)


def _self_signed(
    not_before: dt.datetime, not_after: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(not_before).not_valid_after(not_after).sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def test_import_refuses_expired_and_warns_when_expiring(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    key_path = tmp_path / "key.pem"
    chain_path = tmp_path / "chain.pem"
    for not_after, outcome in (
        (now - dt.timedelta(days=1), "expired"),
        (now + dt.timedelta(days=10), "warn"),
    ):
        cert, key = _self_signed(now - dt.timedelta(days=100), not_after)
        _write_chain(chain_path, [cert])
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        if outcome == "expired":
            with pytest.raises(CertificateError, match="expired on"):
                files.check_import(chain_path, key_path)
        else:
            _, warnings, _, _ = files.check_import(chain_path, key_path)
            assert warnings and "within 30 days" in warnings[0]


def test_self_signed_certificate_names_and_lifetime(tmp_path: Path) -> None:
    names = files.names_for("mail.example.com", ["example.com", "contoso.com"])
    assert names == [
        "mail.example.com",
        "autodiscover.example.com",
        "mail.contoso.com",
        "autodiscover.contoso.com",
    ]
    info = files.generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", names)
    assert info.names == tuple(names)
    assert (info.not_after - info.not_before).days <= 366
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600


async def test_an_http_send_the_client_never_reads_gives_up_and_closes() -> None:
    from protocols import web

    ours, theirs = trio.testing.lockstep_stream_pair()  # a send waits for a matching read
    timed = web._SendTimeout(ours, 0.2)
    started = trio.current_time()
    with pytest.raises(trio.BrokenResourceError):
        await timed.send_all(b"a response nobody reads")
    assert 0.2 <= trio.current_time() - started < 2.0
    with pytest.raises(trio.ClosedResourceError):  # the connection was closed under it
        await ours.send_all(b"more")
    await theirs.aclose()
