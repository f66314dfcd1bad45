"""DKIM keys and signatures, checked by dkimpy's verifier with the published record served
through a dnsfunc stub; and signing by the queue runner on the way out."""

from __future__ import annotations

import stat
from pathlib import Path

import dkim
import pytest

from transport.delivery import _signed
from transport.dkim import DkimAlgorithm, DkimError, DkimSigner, generate_key, load_keys
from transport.dns import FakeResolver
from transport.envelope import BodyType, RecipientSpec
from transport.queue import Queue
from transport.routing import SendConnector

MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <s1@example.test>\r\n\r\n"
    b"Hello,\nwith a bare LF and trailing spaces   \r\n"
)


def dns_from_folder(folder: Path):  # type: ignore[no-untyped-def]
    records = {
        f"{k.record_name}.".encode(): k.record_value.encode()
        for keys in load_keys(folder).values()
        for k in keys
    }

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


@pytest.mark.parametrize("algorithm", list(DkimAlgorithm))
def test_signed_message_verifies(tmp_path: Path, algorithm: DkimAlgorithm) -> None:
    generated = generate_key("Example.test", tmp_path, algorithm=algorithm, selector="s1")
    assert generated.path == tmp_path / "example.test" / "s1.pem"
    assert stat.S_IMODE(generated.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(generated.path.parent.stat().st_mode) == 0o700
    assert generated.key.record_name == "s1._domainkey.example.test"
    assert generated.key.record_value.startswith(f"v=DKIM1; k={algorithm.value}; p=")
    signed = DkimSigner.from_folder(tmp_path).sign(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: v=1; a=" + algorithm.signature_algorithm)
    assert b"c=relaxed/relaxed" in signed
    assert dkim.verify(signed, dnsfunc=dns_from_folder(tmp_path))
    # Relaxed canonicalisation survives refolding; a changed Subject does not verify.
    assert not dkim.verify(
        signed.replace(b"Subject: signed", b"Subject: changed"), dnsfunc=dns_from_folder(tmp_path)
    )


def test_both_keys_sign_and_from_is_oversigned(tmp_path: Path) -> None:
    generate_key("example.test", tmp_path, algorithm=DkimAlgorithm.RSA, selector="r1")
    generate_key("example.test", tmp_path, algorithm=DkimAlgorithm.ED25519, selector="e1")
    signed = DkimSigner.from_folder(tmp_path).sign(MESSAGE)
    assert signed.count(b"DKIM-Signature:") == 2
    d = dkim.DKIM(signed)
    assert d.verify(idx=0, dnsfunc=dns_from_folder(tmp_path))
    assert d.verify(idx=1, dnsfunc=dns_from_folder(tmp_path))
    header = signed.split(b"\r\n\r\n")[0].decode()
    h_tag = header.split("h=")[1].split(";")[0].replace(" ", "").replace("\r\n", "")
    assert h_tag.split(":").count("from") == 2  # one more than present
    # A second From: added later breaks the signature.
    forged = signed.replace(b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice", 1)
    assert not dkim.verify(forged, dnsfunc=dns_from_folder(tmp_path))


def test_rsa_key_is_2048_bits_and_record_splits(tmp_path: Path) -> None:
    generated = generate_key("example.test", tmp_path, selector="big")
    assert len(generated.key.public_key) > 300  # 2048-bit SubjectPublicKeyInfo in base64
    line = generated.zone_line
    assert line.startswith('big._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p=')
    assert all(len(chunk) <= 255 for chunk in line.split('"')[1::2])


def test_no_key_no_signature_and_default_selector(tmp_path: Path) -> None:
    signer = DkimSigner.from_folder(tmp_path)
    assert signer.sign(MESSAGE) == MESSAGE  # no key: the message as it is
    assert (
        signer.sign(MESSAGE.replace(b"From: Alice <alice@example.test>\r\n", b"")).count(b"DKIM")
        == 0
    )
    generated = generate_key("example.test", tmp_path, now=1_700_000_000)
    assert generated.key.selector == "202311r"
    with pytest.raises(DkimError):
        generate_key("example.test", tmp_path, now=1_700_000_000)  # never overwritten


@pytest.mark.parametrize("domain", ["../etc", "example", "a/b.test", "-x.test"])
def test_bad_domains_refused(tmp_path: Path, domain: str) -> None:
    with pytest.raises(DkimError):
        generate_key(domain, tmp_path)
    with pytest.raises(DkimError):
        generate_key("example.test", tmp_path, selector="Bad_Selector")


async def test_runner_signs_authenticated_submissions_only(
    make_sink, harness, tmp_path: Path
) -> None:
    keys = tmp_path / "dkim"
    generate_key("example.test", keys, algorithm=DkimAlgorithm.ED25519, selector="e1")
    sink = make_sink()
    resolver = FakeResolver(
        mx={"remote.test": [(10, "mx.remote.test")]}, a={"mx.remote.test": ["127.0.0.1"]}
    )
    async with harness(
        resolver,
        (SendConnector(name="Internet"),),
        mx_port=sink.port,
        signer=DkimSigner.from_folder(keys),
    ) as h:
        h.queue.enqueue(
            MESSAGE,
            sender="alice@example.test",
            recipients=[RecipientSpec("bob@remote.test")],
            auth_identity="alice@example.test",
        )
        h.queue.enqueue(
            MESSAGE, sender="alice@example.test", recipients=[RecipientSpec("bob@remote.test")]
        )
        await h.settle()
    signed = [m for m in sink.messages if m.content.startswith(b"DKIM-Signature")]
    assert len(sink.messages) == 2 and len(signed) == 1
    assert dkim.verify(signed[0].content, dnsfunc=dns_from_folder(keys))


def test_binarymime_with_other_line_ends_than_crlf_is_not_signed(tmp_path: Path) -> None:
    # Signing puts line ends in CRLF form, which would alter a binary body (RFC 3030):
    # such a message goes out unsigned and as it is; a CRLF-clean one is signed.
    keys = tmp_path / "dkim"
    generate_key("example.test", keys, algorithm=DkimAlgorithm.ED25519, selector="e1")
    signer = DkimSigner.from_folder(keys)
    queue = Queue(tmp_path / "queue", fsync=False)
    queue.open()

    def entry(message: bytes):
        return queue.enqueue(
            message,
            sender="alice@example.test",
            recipients=[RecipientSpec("bob@remote.test")],
            auth_identity="alice@example.test",
            body=BodyType.BINARY_MIME,
        )

    assert b"\nwith" in MESSAGE and b"\r\nwith" not in MESSAGE  # a bare LF
    assert _signed(signer, entry(MESSAGE), MESSAGE) == MESSAGE
    clean = MESSAGE.replace(b"\nwith", b"\r\nwith")
    signed = _signed(signer, entry(clean), clean)
    assert signed.startswith(b"DKIM-Signature") and signed.endswith(clean)
    assert dkim.verify(signed, dnsfunc=dns_from_folder(keys))
