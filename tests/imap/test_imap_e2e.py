"""End to end: the real server (a subprocess) and Python's imaplib on 143 and 993."""

from __future__ import annotations

import base64
import email
import imaplib
import re
import time

import pytest
from harness import Instance, Server
from imap_e2e_support import (
    NESTED,
    CompressingIMAP4_SSL,
    RawImap,
    fetch_items,
    imap_starttls,
    imaps,
    login,
    smtp_deliver,
)


def _uidvalidity(client: imaplib.IMAP4) -> int:
    _typ, data = client.response("UIDVALIDITY")
    assert data and data[0] is not None
    return int(data[0])


def test_starttls_port_refuses_login_before_tls_and_works_after(
    server: Server, instance: Instance
) -> None:
    host, port = server.address("imap")
    plain = imaplib.IMAP4(host, port)
    # Plaintext on 127.0.0.1 is refused unless the config allows it (it does not here).
    assert "LOGINDISABLED" in plain.capabilities
    assert "STARTTLS" in plain.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="STARTTLS"):
        plain.login(instance.user, instance.password)
    plain.starttls(instance.client_context(check_hostname=False))
    assert "AUTH=PLAIN" in plain.capabilities and "STARTTLS" not in plain.capabilities
    typ, data = plain.login(instance.user, instance.password)
    assert typ == "OK" and b"IDLE" in data[0]
    typ, data = plain.select("INBOX")
    assert typ == "OK"
    plain.logout()


def test_list_special_use_select_examine_append_fetch_every_item(
    server: Server, instance: Instance
) -> None:
    client = login(imaps(server, instance), instance)
    typ, listing = client.list()
    assert typ == "OK"
    lines = [line.decode() for line in listing if isinstance(line, bytes)]
    assert '(\\HasNoChildren) "/" INBOX' in lines
    assert any("\\Sent" in line and '"Sent Items"' in line for line in lines)
    assert any("\\Trash" in line and '"Deleted Items"' in line for line in lines)
    typ, _special = client._simple_command("LIST", '(SPECIAL-USE) "" "*"')
    assert typ == "OK"
    special_lines = client.untagged_responses.pop("LIST", [])
    assert len(special_lines) == 5 and all(b"INBOX" not in x for x in special_lines)

    typ, data = client.append("INBOX", "(\\Flagged)", None, NESTED)
    assert typ == "OK"
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert m, data
    uid = int(m.group(2))

    typ, data = client.select("INBOX", readonly=True)  # EXAMINE
    assert typ == "OK" and data == [b"1"]
    assert client.response("READ-ONLY")[1] == [b""]
    typ, data = client.uid(
        "FETCH",
        str(uid),
        "(FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ "
        "BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[2.1] "
        "BODY.PEEK[2.2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[3.1] "
        "BODY.PEEK[HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)] "
        "BODY.PEEK[]<0.10> BINARY.PEEK[4] BINARY.SIZE[4])",
    )
    assert typ == "OK"
    items = fetch_items(data)
    parsed = email.message_from_bytes(NESTED)
    assert items[b"UID"] == str(uid).encode()
    assert items[b"FLAGS"] == b"(\\Flagged \\Recent)"
    assert items[b"RFC822.SIZE"] == str(len(NESTED)).encode()
    assert re.fullmatch(
        rb'"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"', items[b"INTERNALDATE"]
    )
    assert items[b"ENVELOPE"].startswith(b'("Tue, 1 Jul 2003 10:52:37 +0200" "nested parts" ')
    assert b'(("Carol" NIL "carol" "example.org"))' in items[b"ENVELOPE"]
    assert b'"<nested-1@example.org>")' in items[b"ENVELOPE"]
    structure = items[b"BODYSTRUCTURE"]
    assert b'"alternative"' in structure and b'"message" "rfc822"' in structure
    assert b'("attachment" ("filename" "bin.dat"))' in structure
    assert b"attachment" not in items[b"BODY"]  # BODY has no extension data
    assert re.fullmatch(rb"\(\d+\)", items[b"MODSEQ"])
    assert items[b"BODY[]"] == NESTED
    header_end = NESTED.index(b"\r\n\r\n") + 4
    assert items[b"BODY[HEADER]"] == NESTED[:header_end]
    assert items[b"BODY[TEXT]"] == NESTED[header_end:]
    assert items[b"BODY[1]"] == b"part one text"
    assert items[b"BODY[2.1]"] == b"alternative plain"
    assert items[b"BODY[2.2.MIME]"] == b"Content-Type: text/html\r\n\r\n"
    attached = parsed.get_payload()[2].get_payload()[0]
    assert items[b"BODY[3.HEADER]"].startswith(b"From: Inner <inner@example.org>\r\n")
    assert items[b"BODY[3.HEADER]"].endswith(b"\r\n\r\n")
    assert attached["Subject"] == "attached message"
    assert items[b"BODY[3.TEXT]"].startswith(b"--deep\r\n")
    assert items[b"BODY[3.1]"] == b"deep text"
    assert items[b"BODY[HEADER.FIELDS (Subject From)]"] == (
        b"From: Bob Sender <bob@example.org>\r\nSubject: nested parts\r\n\r\n"
    )
    assert b"Subject:" not in items[b"BODY[HEADER.FIELDS.NOT (Subject)]"]
    assert b"Message-ID:" in items[b"BODY[HEADER.FIELDS.NOT (Subject)]"]
    assert items[b"BODY[]<0>"] == NESTED[:10]
    assert items[b"BINARY[4]"] == base64.b64decode(b"AAECAwQFBgc=")
    assert items[b"BINARY.SIZE[4]"] == b"8"
    # RFC822* items set \Seen, so the read-only EXAMINE must not let them: fetch them
    # read-write, and \Seen appears.
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    typ, data = client.uid("FETCH", str(uid), "(RFC822.HEADER RFC822.TEXT)")
    items = fetch_items(data)
    assert items[b"RFC822.HEADER"] == NESTED[:header_end]
    assert items[b"RFC822.TEXT"] == NESTED[header_end:]
    typ, data = client.uid("FETCH", str(uid), "(RFC822)")
    items = fetch_items(data)
    assert items[b"RFC822"] == NESTED
    typ, data = client.uid("FETCH", str(uid), "(FLAGS)")
    assert b"\\Seen" in fetch_items(data)[b"FLAGS"]
    client.logout()


def test_store_copy_move_uid_expunge_search(server: Server, instance: Instance) -> None:
    client = login(imap_starttls(server, instance), instance)
    for n in range(1, 6):
        msg = f"From: s{n}@example.org\r\nSubject: item {n}\r\n\r\nbody {n}\r\n".encode()
        assert client.append("INBOX", None, None, msg)[0] == "OK"
    client.select("INBOX")
    typ, data = client.store("1:2", "+FLAGS", "(\\Deleted)")
    assert typ == "OK" and len(data) == 2 and b"\\Deleted" in data[0]
    typ, data = client.search(None, "DELETED")
    assert data == [b"1 2"]
    typ, data = client.uid("SEARCH", "FROM", "s3@example.org")
    assert data == [b"3"]
    typ, data = client.search(None, "OR", "SUBJECT", '"item 4"', "BODY", '"body 5"')
    assert data == [b"4 5"]
    client.create("Projects/2024")
    typ, data = client._simple_command("UID", "COPY", "3", "Projects/2024")
    assert typ == "OK"
    m = re.search(rb"\[COPYUID (\d+) 3 (\d+)\]", data[0])
    assert m, data
    typ, data = client.uid("MOVE", "4:5", "Archive")
    assert typ == "OK"
    typ, copyuid = client.response("COPYUID")  # RFC 6851: in an untagged OK
    assert any(x is not None and b" 4:5 1:2" in x for x in copyuid), copyuid
    typ, data = client.uid("EXPUNGE", "1")  # only UID 1, though UID 2 is \Deleted too
    assert typ == "OK"
    typ, data = client.uid("SEARCH", "ALL")
    assert data == [b"2 3"]
    typ, data = client.status("Archive", "(MESSAGES UIDNEXT)")
    assert b"MESSAGES 2" in data[0]
    client.select("Projects/2024")
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert b"item 3" in data[0][1]
    typ, data = client.list('""', "Projects*")
    assert b'(\\HasChildren) "/" Projects' in data[0]
    client.logout()


def test_idle_is_woken_by_an_smtp_delivery(server: Server, instance: Instance) -> None:
    raw = RawImap(server, instance)
    raw.command(f"LOGIN {instance.user} {instance.password}")
    raw.command("SELECT INBOX")
    raw.send(b"I1 IDLE\r\n")
    assert raw.readline().startswith(b"+ ")
    smtp_deliver(server, instance.user, b"Subject: wake up\r\n\r\nhello\r\n")
    delivered = time.monotonic()
    line = raw.readline(timeout=5)
    woken = time.monotonic()
    assert line == b"* 1 EXISTS\r\n"
    assert woken - delivered < 0.1  # the issue: within 100 ms of the delivery
    assert raw.readline() == b"* 1 RECENT\r\n"
    raw.send(b"DONE\r\n")
    assert raw.readline().startswith(b"I1 OK")
    raw.close()


def test_condstore_qresync_resync_after_another_session_changed_things(
    server: Server, instance: Instance
) -> None:
    a = login(imaps(server, instance), instance)
    for n in range(1, 4):
        a.append("INBOX", None, None, f"Subject: q{n}\r\n\r\nx\r\n".encode())
    a._simple_command("ENABLE", "QRESYNC")
    a.select("INBOX")
    uidvalidity = _uidvalidity(a)
    modseq = int(a.response("HIGHESTMODSEQ")[1][0])
    a.logout()

    b = login(imaps(server, instance), instance)
    b.select("INBOX")
    b.uid("STORE", "1", "+FLAGS", "(\\Answered)")
    b.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    b.uid("EXPUNGE", "2")
    b.append("INBOX", None, None, b"Subject: q4\r\n\r\nx\r\n")
    # A second, concurrent session sees the changes as they happen (NOOP).
    c = RawImap(server, instance)
    c.command(f"LOGIN {instance.user} {instance.password}")
    c.command("ENABLE CONDSTORE")
    c.command("SELECT INBOX")
    b.uid("STORE", "3", "+FLAGS", "(\\Flagged)")
    lines, _ = c.command("NOOP")
    assert any(re.match(rb"\* 2 FETCH \(FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", x) for x in lines), (
        lines
    )
    b.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
    b.expunge()
    lines, _tagged = c.command("NOOP")
    assert b"* 2 EXPUNGE\r\n" in lines, lines
    c.close()
    b.logout()

    a = login(imaps(server, instance), instance)
    a._simple_command("ENABLE", "QRESYNC")
    typ, _data = a._simple_command("SELECT", f"INBOX (QRESYNC ({uidvalidity} {modseq}))")
    assert typ == "OK"
    vanished = a.untagged_responses.get("VANISHED", [])
    assert vanished == [b"(EARLIER) 2:3"], vanished
    fetches = a.untagged_responses.get("FETCH", [])
    assert any(b"UID 1 FLAGS (\\Answered)" in f for f in fetches), fetches
    assert any(b"UID 4 " in f for f in fetches), fetches
    a.logout()


def test_compress_deflate(server: Server, instance: Instance) -> None:
    host, port = server.address("imaps")
    client = CompressingIMAP4_SSL(
        host, port, ssl_context=instance.client_context(check_hostname=False)
    )
    client.login(instance.user, instance.password)
    assert "COMPRESS=DEFLATE" in client.untagged_responses.get("CAPABILITY", [b""])[
        -1
    ].decode() or (client.capability()[1][0].find(b"COMPRESS=DEFLATE") >= 0)
    typ, data = client.compress()
    assert typ == "OK", data
    body = b"Subject: squeeze\r\n\r\n" + b"compressible line\r\n" * 2000
    assert client.append("INBOX", None, None, body)[0] == "OK"
    client.select("INBOX")
    typ, data = client.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == body
    typ, data = client.capability()
    assert b"COMPRESS=DEFLATE" not in data[0]  # RFC 4978 4: not offered twice
    client.logout()
