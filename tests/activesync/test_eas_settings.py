"""Settings, ValidateCert and ResolveRecipients over real HTTPS, every response checked
with wbxml2xml."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eas_client import device_information_set
from eas_env import ALICE, EasEnv

from mailhost.devices import SqliteDeviceRegistry
from protocols.activesync.commands import TrustStore
from protocols.activesync.policy import Policy
from protocols.activesync.wbxml import E, Element

NOW = dt.datetime.now(dt.UTC)


def settings(*blocks: Element) -> Element:
    return E("Settings:Settings", blocks)


@pytest.fixture
def phone(eas: EasEnv) -> Any:
    client = eas.client(version="16.1")
    client.provision()
    return client


# --- Settings ------------------------------------------------------------------------------


def test_device_information_set_updates_the_record(eas: EasEnv, phone: Any) -> None:
    response = phone.command(
        "Settings", settings(device_information_set(OS="iOS 18.0", FriendlyName="Work phone"))
    )
    assert response.status_at("Status") == 1
    assert response.status_at("DeviceInformation/Status") == 1
    device = eas.device()
    assert device.info.os == "iOS 18.0" and device.info.friendly_name == "Work phone"
    assert device.info.model == "iPhone15C2"


def test_blocks_are_answered_in_order(phone: Any) -> None:
    response = phone.command(
        "Settings",
        settings(
            E("Settings:Oof", E("Settings:Get", E("Settings:BodyType", "Text"))),
            E("Settings:UserInformation", E("Settings:Get")),
            device_information_set(),
        ),
    )
    assert [c.tag for c in response.document.children] == [
        "Status",
        "Oof",
        "UserInformation",
        "DeviceInformation",
    ]


def test_out_of_office_is_off_and_cannot_be_set_yet(phone: Any) -> None:
    get = phone.command(
        "Settings", settings(E("Settings:Oof", E("Settings:Get", E("Settings:BodyType", "HTML"))))
    )
    assert get.status_at("Oof/Status") == 1 and get.text("Oof/Get/OofState") == "0"
    set_ = phone.command(
        "Settings", settings(E("Settings:Oof", E("Settings:Set", E("Settings:OofState", 1))))
    )
    assert set_.status_at("Status") == 1 and set_.status_at("Oof/Status") == 3


def test_rights_management_has_no_templates(phone: Any) -> None:
    response = phone.command(
        "Settings", settings(E("Settings:RightsManagementInformation", E("Settings:Get")))
    )
    assert response.status_at("RightsManagementInformation/Status") == 1
    templates = response.document.find(
        "RightsManagementInformation/Get/RightsManagement:RightsManagementTemplates"
    )
    assert templates is not None and templates.is_empty


@pytest.mark.parametrize(
    "document",
    [
        E("Settings:Settings", E("Settings:Get")),
        E("Settings:Settings", E("Settings:UserInformation")),
        E("Settings:Settings", E("Settings:DeviceInformation")),
        E("FolderHierarchy:FolderSync"),
    ],
)
def test_malformed_settings_are_status_2(phone: Any, document: Element) -> None:
    response = phone.command("Settings", document)
    assert response.status == 200
    top = response.status_at("Status")
    inner = [int(e.text) for e in response.document.iter() if e.tag == "Status"]
    assert top == 2 or 2 in inner
    assert phone.command("Settings", body=b"").status_at("Status") == 2


def test_recovery_password_denied_unless_the_policy_enables_it(eas: EasEnv, phone: Any) -> None:
    request = settings(
        E("Settings:DevicePassword", E("Settings:Set", E("Settings:Password", "4711-0815")))
    )
    denied = phone.command("Settings", request)
    assert denied.status_at("DevicePassword/Status") == 7
    assert eas.registry.recovery_password(ALICE.mailbox_id, eas.device().device_id) is None
    eas.policies.policy = Policy(password_recovery_enabled=True)
    phone.provision()
    stored = phone.command("Settings", request)
    assert stored.status_at("DevicePassword/Status") == 1
    assert eas.registry.recovery_password(ALICE.mailbox_id, eas.device().device_id) == "4711-0815"
    too_long = settings(
        E("Settings:DevicePassword", E("Settings:Set", E("Settings:Password", "x" * 256)))
    )
    assert phone.command("Settings", too_long).status_at("DevicePassword/Status") == 2


def test_recovery_password_is_encrypted_at_rest(make_env: Any, tmp_path: Path) -> None:
    database = tmp_path / "directory.sqlite3"
    key = tmp_path / "eas-recovery.key"
    registry = SqliteDeviceRegistry(database, recovery_key_path=key)
    env: EasEnv = make_env(registry=registry)
    env.policies.policy = Policy(password_recovery_enabled=True)
    phone = env.client(version="14.1")
    phone.provision()
    secret = "Recovery-Secret-8812"
    request = settings(
        E("Settings:DevicePassword", E("Settings:Set", E("Settings:Password", secret)))
    )
    assert phone.command("Settings", request).status_at("DevicePassword/Status") == 1
    registry.close()
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    assert key.stat().st_mode & 0o777 == 0o600
    reopened = SqliteDeviceRegistry(database, recovery_key_path=key)
    assert reopened.recovery_password(ALICE.mailbox_id, "applf17xr4y2jclm") == secret
    reopened.close()


# --- ValidateCert --------------------------------------------------------------------------


def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclasses.dataclass
class Pki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey


def certificate(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    before: dt.datetime | None = None,
    after: dt.datetime | None = None,
    signing: bool = True,
    eku: list[x509.ObjectIdentifier] | None = None,
    crl: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(before or NOW - dt.timedelta(days=1))
        .not_valid_after(after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=signing and not ca,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@example.org")]), critical=False
        )
    if crl:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://crl.example.org/ca.crl")], None, None, None
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key, inter_key = new_key(), new_key()
    root = certificate("Test Root", "Test Root", root_key, root_key, ca=True)
    inter = certificate("Test Inter", "Test Root", inter_key, root_key, ca=True)
    return Pki(root, root_key, inter, inter_key)


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def validate(
    client: Any, leaves: list[str], chain: list[str] = (), check_crl: bool = False
) -> list[int]:  # type: ignore[assignment]
    document = E(
        "ValidateCert:ValidateCert",
        E("ValidateCert:CertificateChain", (E("ValidateCert:Certificate", c) for c in chain))
        if chain
        else None,
        E("ValidateCert:Certificates", (E("ValidateCert:Certificate", c) for c in leaves)),
        E("ValidateCert:CheckCrl", "1") if check_crl else None,
    )
    response = client.command("ValidateCert", document)
    assert response.status_at("Status") == 1
    certificates = response.document.findall("Certificate")
    assert [c.tag for c in response.document.children] == ["Status", *["Certificate"] * len(leaves)]
    return [int(c.text_of("Status") or 0) for c in certificates]


def test_validate_cert_statuses(make_env: Any, pki: Pki) -> None:
    env: EasEnv = make_env(trust=TrustStore.of([pki.root]))
    client = env.client(version="14.1")
    client.provision()
    inter = b64(pki.inter)

    def leaf(**options: Any) -> str:
        return b64(
            certificate("alice", "Test Inter", new_key(), pki.inter_key, ca=False, **options)
        )

    other_root_key = new_key()
    stranger = certificate("Stranger", "Stranger", other_root_key, other_root_key, ca=True)
    forged = b64(certificate("alice", "Test Inter", new_key(), new_key(), ca=False))
    expired_inter = certificate(
        "Old Inter", "Test Root", pki.inter_key, pki.root_key, ca=True,
        before=NOW - dt.timedelta(days=90), after=NOW - dt.timedelta(days=1),
    )  # fmt: skip
    direct = b64(certificate("bob", "Test Root", new_key(), pki.root_key, ca=False))
    cases: list[tuple[list[str], list[str], int]] = [
        ([leaf()], [inter], 1),
        ([direct], [], 1),
        ([leaf()], [], 4),  # the intermediate is missing: no path to the root
        (
            [leaf(after=NOW - dt.timedelta(seconds=1), before=NOW - dt.timedelta(days=2))],
            [inter],
            7,
        ),
        ([leaf(before=NOW + dt.timedelta(days=1))], [inter], 7),
        (
            [b64(certificate("alice", "Old Inter", new_key(), pki.inter_key, ca=False))],
            [b64(expired_inter)],
            8,
        ),
        ([leaf(signing=False)], [inter], 6),
        ([leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH])], [inter], 9),
        ([forged], [inter], 3),
        ([leaf()], [b64(stranger)], 5),
        ([b64(certificate("s", "Stranger", new_key(), other_root_key, ca=False))], [], 4),
        (["!!!not base64"], [], 10),
        ([base64.b64encode(b"not DER").decode()], [], 10),
    ]
    for leaves, chain, expected in cases:
        assert validate(client, leaves, chain) == [expected], (expected, chain)
    assert validate(client, [leaf(crl=True)], [inter], check_crl=True) == [16]
    assert validate(client, [leaf(crl=True)], [inter]) == [1]
    assert validate(client, [leaf(), forged, direct], [inter]) == [1, 3, 1]
    empty = client.command("ValidateCert", E("ValidateCert:ValidateCert"))
    assert empty.status_at("Status") == 2 and empty.document.find("Certificate") is None
    many = E(
        "ValidateCert:ValidateCert",
        E("ValidateCert:Certificates", [E("ValidateCert:Certificate", direct)] * 17),
    )
    assert client.command("ValidateCert", many).status_at("Status") == 2


def test_trust_store_from_a_bundle_file(tmp_path: Path, pki: Pki) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        pki.root.public_bytes(serialization.Encoding.PEM)
        + pki.inter.public_bytes(serialization.Encoding.PEM)
    )
    store = TrustStore.system([tmp_path / "missing.pem", bundle])
    assert store.roots() == (pki.root, pki.inter)
    assert TrustStore.system([tmp_path / "missing.pem"]).roots() == ()


# --- ResolveRecipients ---------------------------------------------------------------------


def resolve(client: Any, *to: str, options: Element | None = None) -> Any:
    return client.command(
        "ResolveRecipients",
        E(
            "ResolveRecipients:ResolveRecipients",
            (E("ResolveRecipients:To", t) for t in to),
            options,
        ),
    )


def test_resolve_recipients(phone: Any) -> None:
    response = resolve(phone, "alice@example.org", "bob", "nobody")
    assert response.status_at("Status") == 1
    one, ambiguous, none = response.document.findall("Response")
    assert [c.tag for c in one.children] == ["To", "Status", "RecipientCount", "Recipient"]
    assert one.text_of("Status") == "1" and one.text_of("RecipientCount") == "1"
    recipient = one.find("Recipient")
    assert recipient is not None
    assert [c.tag for c in recipient.children] == ["Type", "DisplayName", "EmailAddress"]
    assert recipient.text_of("Type") == "1" and recipient.text_of("DisplayName") == "Alice Liddell"
    assert ambiguous.text_of("Status") == "2" and ambiguous.text_of("RecipientCount") == "2"
    assert none.text_of("Status") == "4" and none.text_of("RecipientCount") == "0"
    assert none.find("Recipient") is None


def test_resolve_recipients_options(phone: Any) -> None:
    options = E(
        "ResolveRecipients:Options",
        E("ResolveRecipients:CertificateRetrieval", "2"),
        E("ResolveRecipients:MaxAmbiguousRecipients", "1"),
        E(
            "ResolveRecipients:Availability",
            E("ResolveRecipients:StartTime", "2024-01-02T08:00:00.000Z"),
            E("ResolveRecipients:EndTime", "2024-01-02T10:15:00.000Z"),
        ),
        E("ResolveRecipients:Picture", E("ResolveRecipients:MaxSize", "1000")),
    )
    response = resolve(phone, "bob", options=options)
    answer = response.document.find("Response")
    assert answer is not None
    assert answer.text_of("Status") == "3" and answer.text_of("RecipientCount") == "1"
    recipient = answer.find("Recipient")
    assert recipient is not None
    assert [c.tag for c in recipient.children] == [
        "Type", "DisplayName", "EmailAddress", "Availability", "Certificates", "Picture",
    ]  # fmt: skip
    assert recipient.text_of("Availability/Status") == "1"
    assert recipient.text_of("Availability/MergedFreeBusy") == "44444"  # 2h15 = 5 slots
    assert recipient.text_of("Certificates/Status") == "7"
    assert recipient.text_of("Certificates/CertificateCount") == "0"
    assert recipient.text_of("Picture/Status") == "173"


def test_resolve_recipients_errors(eas: EasEnv, phone: Any) -> None:
    assert resolve(phone, *[f"u{i}" for i in range(101)]).status_at("Status") == 5
    assert (
        phone.command("ResolveRecipients", E("ResolveRecipients:ResolveRecipients")).status_at(
            "Status"
        )
        == 5
    )
    backwards = E(
        "ResolveRecipients:Options",
        E(
            "ResolveRecipients:Availability",
            E("ResolveRecipients:StartTime", "2024-01-02T10:00:00.000Z"),
            E("ResolveRecipients:EndTime", "2024-01-02T08:00:00.000Z"),
        ),
    )
    assert resolve(phone, "bob", options=backwards).status_at("Status") == 5

    def broken(query: str, *, limit: int) -> list[Any]:
        raise RuntimeError("directory down")

    eas.recipients.resolve = broken  # type: ignore[method-assign]
    assert resolve(phone, "bob").status_at("Status") == 6
