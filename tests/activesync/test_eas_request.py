"""The request line and headers (MS-ASHTTP 2.2.1.1): both query forms, the version, the
policy key and Basic credentials. Sans-IO: no server needed."""

from __future__ import annotations

import base64

import pytest
from eas_client import base64_query, basic
from hypothesis import given
from hypothesis import strategies as st

from protocols.activesync.request import (
    MAX_DEVICE_ID_LENGTH,
    MAX_DEVICE_TYPE_LENGTH,
    MAX_POLICY_KEY_LENGTH,
    MAX_QUERY_LENGTH,
    ProtocolVersion,
    RequestError,
    normalize_device_id,
    parse_basic_authorization,
    parse_policy_key,
    parse_query,
    parse_version,
    policy_key_from_query,
)

# MS-ASHTTP 2.2.1.1.1.1: the spec's own example of the base64 form (14.0, Sync, en-US,
# DeviceId "v140Device", no policy key, DeviceType "SmartPhone").
SPEC_BASE64_QUERY = "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"


def test_the_spec_example_of_the_base64_form() -> None:
    query = parse_query(SPEC_BASE64_QUERY)
    assert query.base64_form
    assert query.version is ProtocolVersion.V14_0
    assert query.command == "Sync"
    assert query.locale == 0x0409
    assert query.device_id == "v140device"  # ASCII ids stay text, case-folded
    assert query.device_type == "SmartPhone"
    assert not query.policy_key_sent
    assert policy_key_from_query(query).absent


def test_plain_form_with_every_parameter() -> None:
    query = parse_query(
        "Cmd=SmartReply&User=EXAMPLE%5Calice&DeviceId=ApplF17XR4Y2JCLM&DeviceType=iPhone"
        "&ItemId=5%3A12&CollectionId=5&SaveInSent=T&LongId=RgAAAA&Occurrence=x&AttachmentName=a"
    )
    assert not query.base64_form
    assert query.command == "SmartReply"
    assert query.user == "EXAMPLE\\alice"
    assert query.device_id == "applf17xr4y2jclm"
    assert (query.item_id, query.collection_id) == ("5:12", "5")
    assert query.save_in_sent
    assert (query.long_id, query.occurrence, query.attachment_name) == ("RgAAAA", "x", "a")
    assert query.version is None


def test_plain_form_names_are_case_insensitive() -> None:
    query = parse_query("cmd=Sync&user=a&deviceid=X1&devicetype=Android")
    assert (query.command, query.device_id, query.device_type) == ("Sync", "x1", "Android")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Cmd=Sync&DeviceId=x&DeviceType=y",  # no User
        "Cmd=&User=a&DeviceId=x&DeviceType=y",
        "Cmd=Sync&User=a&DeviceType=y",  # no DeviceId
        "Cmd=Sync&User=a&DeviceId=x",  # no DeviceType
        "Cmd=Sync&Cmd=Ping&User=a&DeviceId=x&DeviceType=y",
        "Cmd=Sync&User=a&DeviceId=a%2Fb&DeviceType=y",  # '/' in a DeviceId
        "Cmd=Sync&User=a&DeviceId=..&DeviceType=y",
        "Cmd=Sync&User=a&DeviceId=x&DeviceType=%0D%0A",
        "!!!not-base64!!!",
        "Cmd=Sync&User=a&DeviceId=x&DeviceType=y&ItemId=" + "i" * 2000,
    ],
)
def test_malformed_queries_are_request_errors(text: str) -> None:
    with pytest.raises(RequestError):
        parse_query(text)


def test_query_length_limit() -> None:
    base = "Cmd=Sync&User=a&DeviceId=x&DeviceType=y"
    for name in "ABCD":
        base += f"&{name}=" + "a" * 900
    base += "&W="
    parse_query(base + "d" * (MAX_QUERY_LENGTH - len(base)))
    with pytest.raises(RequestError):
        parse_query(base + "d" * (MAX_QUERY_LENGTH - len(base) + 1))


def test_query_not_utf8() -> None:
    with pytest.raises(RequestError):
        parse_query("Cmd=Sync&User=%FF&DeviceId=x&DeviceType=y")


def test_device_ids_are_normalised_leniently() -> None:
    assert normalize_device_id(" {ABCDEF-12_3.x} ") == "abcdef-12_3.x"
    assert normalize_device_id("a" * MAX_DEVICE_ID_LENGTH) == "a" * MAX_DEVICE_ID_LENGTH
    with pytest.raises(RequestError):
        normalize_device_id("a" * (MAX_DEVICE_ID_LENGTH + 1))
    with pytest.raises(RequestError):
        parse_query(f"Cmd=Sync&User=a&DeviceId=x&DeviceType={'t' * (MAX_DEVICE_TYPE_LENGTH + 1)}")


def test_base64_form_decodes_every_field() -> None:
    raw_id = bytes(range(0xF0, 0x100))  # 16 raw bytes, as Windows Phone sends
    text = base64_query(
        version="16.1",
        command="SmartForward",
        device_id=raw_id,
        device_type="WP8",
        policy_key=3_000_000_000,
        locale=0x0407,
        params={
            "ItemId": "7:1",
            "CollectionId": "7",
            "CollectionName": "Inbox",
            "ParentId": "0",
            "LongId": "L1",
            "Occurrence": "2024",
            "AttachmentName": "7:1:0",
            "User": "alice",
            "Options": b"\x03",
        },
    )
    query = parse_query(text)
    assert query.version is ProtocolVersion.V16_1
    assert query.command == "SmartForward"
    assert query.locale == 0x0407
    assert query.device_id == raw_id.hex()  # raw bytes -> hex, as grommunio-sync does
    assert query.device_type == "WP8"
    assert query.policy_key == 3_000_000_000 and policy_key_from_query(query).value == 3_000_000_000
    assert (query.item_id, query.collection_id, query.collection_name) == ("7:1", "7", "Inbox")
    assert (query.parent_id, query.long_id, query.occurrence) == ("0", "L1", "2024")
    assert (query.attachment_name, query.user) == ("7:1:0", "alice")
    assert query.save_in_sent and query.accept_multipart


def test_base64_form_without_padding_and_url_encoded() -> None:
    text = base64_query(version="14.1", command="Ping", device_id=b"dev1", device_type="Android")
    query = parse_query(text.rstrip("=").replace("+", "%2B").replace("/", "%2F"))
    assert (query.command, query.device_id, query.version) == (
        "Ping",
        "dev1",
        ProtocolVersion.V14_1,
    )


def _packed(*parts: bytes) -> str:
    return base64.b64encode(b"".join(parts)).decode()


@pytest.mark.parametrize(
    "text",
    [
        _packed(b"\x19\x00\x09\x04\x01x\x00\x01y"),  # version 2.5
        _packed(b"\x78\x00\x09\x04\x01x\x00\x01y"),  # version 12.0
        _packed(b"\x8d\x63\x09\x04\x01x\x00\x01y"),  # command code 99
        _packed(b"\x8d\x00\x09\x04\x00\x00\x01y"),  # empty device id
        _packed(b"\x8d\x00\x09\x04\x01x\x02\x01\x02\x01y"),  # policy key of 2 bytes
        _packed(b"\x8d\x00\x09\x04\x01x\x00\x00"),  # empty device type
        _packed(b"\x8d\x00\x09\x04\x05x"),  # device id cut short
        _packed(b"\x8d\x00\x09\x04\x01x\x00\x01y\x03\x05ab"),  # parameter cut short
        _packed(b"\x8d\x00\x09\x04\x01x\x00\x01y\x03\x01a\x03\x01b"),  # parameter twice
        _packed(b"\x8d\x00\x09"),
    ],
)
def test_malformed_base64_forms(text: str) -> None:
    with pytest.raises(RequestError):
        parse_query(text)


@given(st.binary(max_size=200))
def test_any_base64_bytes_parse_or_raise_request_error(data: bytes) -> None:
    try:
        parse_query(base64.b64encode(data).decode() or "x")
    except RequestError:
        pass


@given(st.text(max_size=300))
def test_any_query_text_parses_or_raises_request_error(text: str) -> None:
    try:
        parse_query(text.encode("utf-8", "surrogatepass"))
    except RequestError:
        pass


def test_versions() -> None:
    assert parse_version(None) is None
    assert parse_version("14.1") is ProtocolVersion.V14_1
    assert ProtocolVersion.V12_1.uses_http_449 and not ProtocolVersion.V14_0.uses_http_449
    assert ProtocolVersion.V16_1 > ProtocolVersion.V14_1 >= ProtocolVersion.V14_1
    for bad in ("2.5", "12.0", "17.0", "", "16.1x"):
        with pytest.raises(RequestError):
            parse_version(bad)


def test_policy_keys() -> None:
    assert parse_policy_key(None).absent
    assert parse_policy_key("").absent
    assert parse_policy_key("0").absent  # MS-ASPROV 3.1.5.1.1: 0 = not provisioned
    assert parse_policy_key(" 4294967295 ").value == 4294967295
    for bad in ("4294967296", "-1", "12a", "1" * 11, "1" * (MAX_POLICY_KEY_LENGTH + 1), "١٢"):
        field = parse_policy_key(bad)
        assert field.malformed and field.value is None and not field.absent, bad


def test_basic_credentials() -> None:
    creds = parse_basic_authorization(basic("EXAMPLE\\alice", "pw:with:colons"))
    assert creds is not None
    assert (creds.login, creds.password, creds.domain) == (
        "EXAMPLE\\alice",
        "pw:with:colons",
        "EXAMPLE",
    )
    utf8 = parse_basic_authorization(basic("carol", "pässwörd"))
    latin1 = parse_basic_authorization(basic("carol", "pässwörd", "latin-1"))
    assert utf8 is not None and latin1 is not None
    assert utf8.password == latin1.password == "pässwörd"
    for header in (
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b":nouser").decode(),
        "Basic " + base64.b64encode(b"user:").decode(),
        "Basic " + base64.b64encode(b"us\x00er:pw").decode(),
        "Basic " + "A" * 5000,
    ):
        assert parse_basic_authorization(header) is None, header
