"""ESMTP parameters (RFC 1870, 3030, 3461, 4954, 6152, 6531) and xtext."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.smtp.esmtp import (
    MAX_AUTH_PARAM,
    MAX_ENVID,
    MAX_ORCPT,
    MAX_ORCPT_ADDR_TYPE,
    BodyType,
    DsnNotify,
    DsnReturn,
    Extensions,
    MailParams,
    OriginalRecipient,
    RcptParams,
    parse_mail_params,
    parse_rcpt_params,
    xtext_decode,
    xtext_encode,
)
from protocols.smtp.replies import SmtpError
from transport.envelope import OriginalRecipient as QueuedRecipient

ALL = Extensions(size=1000, auth=("PLAIN",))


def mail(text: str, extensions: Extensions = ALL, esmtp: bool = True) -> MailParams:
    return parse_mail_params(text, extensions, esmtp=esmtp)


def rcpt(text: str, extensions: Extensions = ALL) -> RcptParams:
    return parse_rcpt_params(text, extensions, esmtp=True)


def code_of(call: object) -> tuple[int, str | None]:
    assert callable(call)
    with pytest.raises(SmtpError) as caught:
        call()
    return caught.value.reply.code, caught.value.reply.enhanced


def test_no_parameters() -> None:
    assert mail("") == MailParams()
    assert mail("   ") == MailParams()
    assert rcpt("") == RcptParams()


def test_every_mail_parameter() -> None:
    params = mail(" SIZE=12 body=8bitmime SMTPUTF8 RET=full ENVID=abc+2Bdef AUTH=<>")
    assert params == MailParams(
        size=12,
        body=BodyType.EIGHT_BIT_MIME,
        smtputf8=True,
        ret=DsnReturn.FULL,
        envid="abc+def",
        auth="<>",
    )
    assert mail(" BODY=BINARYMIME").body is BodyType.BINARY_MIME
    assert mail(" BODY=7BIT").body is BodyType.SEVEN_BIT
    assert mail(" AUTH=alice+40example.org").auth == "alice@example.org"


def test_every_rcpt_parameter() -> None:
    params = rcpt(" NOTIFY=failure,delay ORCPT=RFC822;bob+40example.org")
    assert params.notify == frozenset({DsnNotify.FAILURE, DsnNotify.DELAY})
    assert params.orcpt == OriginalRecipient(addr_type="rfc822", address="bob@example.org")
    assert rcpt(" NOTIFY=NEVER").notify == frozenset({DsnNotify.NEVER})


@pytest.mark.parametrize(
    "text",
    [
        " FOO=bar",
        " X-UNKNOWN",
        " MT-PRIORITY=3",
    ],
)
def test_unknown_parameters_are_555(text: str) -> None:
    assert code_of(lambda: mail(text)) == (555, "5.5.4")


@pytest.mark.parametrize(
    ("text", "extensions"),
    [
        (" SIZE=1", Extensions()),
        (" BODY=8BITMIME", Extensions(eight_bit_mime=False)),
        (" BODY=BINARYMIME", Extensions(binary_mime=False)),
        (" SMTPUTF8", Extensions(smtputf8=False)),
        (" RET=FULL", Extensions(dsn=False)),
        (" ENVID=x", Extensions(dsn=False)),
        (" AUTH=<>", Extensions()),
    ],
)
def test_parameters_of_extensions_not_offered_are_555(text: str, extensions: Extensions) -> None:
    assert code_of(lambda: mail(text, extensions)) == (555, "5.5.4")


def test_parameters_need_ehlo() -> None:
    assert code_of(lambda: mail(" SIZE=1", esmtp=False)) == (555, "5.5.4")


@pytest.mark.parametrize(
    "text",
    [
        "SIZE=1",  # no space after the path
        " SIZE",
        " SIZE=",
        " SIZE=abc",
        " SIZE=-1",
        " SIZE=123456789012345678901",  # 21 digits
        " SIZE=1 SIZE=2",
        " size=1 SIZE=2",
        " BODY=9BIT",
        " SMTPUTF8=yes",
        " RET=ALL",
        " ENVID=a+2",
        " ENVID=a+0d",  # hex must be upper case
        " ENVID=a+0D",  # decodes to CR
        " ENVID=a+20b",  # space is not allowed in ENVID
        " ENVID=" + "e" * (MAX_ENVID + 1),
        " AUTH=a+00b",  # decodes to NUL
        " AUTH=" + "a" * (MAX_AUTH_PARAM + 1),
        " -BAD=1",
        " S_ZE=1",
        " SIZE=1=2",
        " SIZE=\t1",
        " ENVID=é",
    ],
)
def test_malformed_mail_parameters_are_501(text: str) -> None:
    assert code_of(lambda: mail(text)) == (501, "5.5.4")


@pytest.mark.parametrize(
    "text",
    [
        " NOTIFY=",
        " NOTIFY=NEVER,SUCCESS",
        " NOTIFY=SUCCESS,SUCCESS",
        " NOTIFY=SOMETIMES",
        " ORCPT=rfc822",
        " ORCPT=;a@b.example",
        " ORCPT=rfc822;",
        " ORCPT=rfc822;a+0Ab",
        " ORCPT=rfc 822;a",
        " ORCPT=rfc822;" + "a" * MAX_ORCPT,
        " ORCPT=" + "x" * (MAX_ORCPT_ADDR_TYPE + 1) + ";bob+40remote.example",
    ],
)
def test_malformed_rcpt_parameters_are_501(text: str) -> None:
    assert code_of(lambda: rcpt(text)) == (501, "5.5.4")


def test_the_longest_orcpt_address_type_the_queue_keeps_is_accepted() -> None:
    params = rcpt(" ORCPT=" + "x" * MAX_ORCPT_ADDR_TYPE + ";bob+40remote.example")
    assert params.orcpt is not None
    QueuedRecipient(params.orcpt.addr_type, params.orcpt.address)  # the queue takes it


def test_xtext() -> None:
    assert xtext_encode("a+b=c d\r\n") == "a+2Bb+3Dc+20d+0D+0A"
    assert xtext_decode("a+2Bb+3Dc+20d") == "a+b=c d"
    assert xtext_encode("é") == "+C3+A9"
    with pytest.raises(ValueError, match="control or non-ASCII"):
        xtext_decode("+C3+A9")


_printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@given(value=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
def test_xtext_round_trip(value: str) -> None:
    assert xtext_decode(xtext_encode(value)) == value


@given(
    size=st.one_of(st.none(), st.integers(min_value=0, max_value=10**19)),
    body=st.one_of(st.none(), st.sampled_from(BodyType)),
    smtputf8=st.booleans(),
    ret=st.one_of(st.none(), st.sampled_from(DsnReturn)),
    envid=st.one_of(st.none(), _printable.filter(lambda v: len(xtext_encode(v)) <= MAX_ENVID)),
    auth=st.one_of(st.none(), _printable),
)
def test_mail_parameters_round_trip(
    size: int | None,
    body: BodyType | None,
    smtputf8: bool,
    ret: DsnReturn | None,
    envid: str | None,
    auth: str | None,
) -> None:
    params = MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth)
    text = "".join(" " + item for item in params.to_esmtp())
    assert mail(text) == params


@given(
    notify=st.one_of(
        st.none(),
        st.just(frozenset({DsnNotify.NEVER})),
        st.frozensets(
            st.sampled_from([DsnNotify.SUCCESS, DsnNotify.FAILURE, DsnNotify.DELAY]), min_size=1
        ),
    ),
    orcpt=st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=80),
    ),
)
def test_rcpt_parameters_round_trip(notify: frozenset[DsnNotify] | None, orcpt: str | None) -> None:
    original = OriginalRecipient(addr_type="rfc822", address=orcpt) if orcpt else None
    params = RcptParams(notify=notify, orcpt=original)
    text = "".join(" " + item for item in params.to_esmtp())
    assert rcpt(text) == params


@given(st.text(max_size=200))
def test_no_text_crashes_the_parameter_parsers(text: str) -> None:
    codes = set()
    for parse in (parse_mail_params, parse_rcpt_params):
        try:
            parse(text, ALL, esmtp=True)
        except SmtpError as error:
            codes.add(error.reply.code)
    assert codes <= {501, 555}
