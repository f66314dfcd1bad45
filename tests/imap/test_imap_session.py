"""The IMAP session over an in-memory stream, bound to a real store in tmp_path.

Multi-session consistency (checklist item 40), \\Recent, the update rules of RFC 3501
7.4.1, IDLE, throttling and timeouts, and the extensions imaplib cannot easily drive.
"""

from __future__ import annotations

import re

import trio
import trio.testing
from imap_session_kit import PASSWORD, SessionWorld, message

from protocols.imap.settings import ImapSettings
from store import Flag


async def test_recent_is_seen_by_exactly_one_session(world: SessionWorld) -> None:
    world.deliver(message(1))
    a = await world.connect()
    b = await world.connect()
    assert b"* 1 RECENT\r\n" in await a.ok("SELECT INBOX")
    assert b"* 0 RECENT\r\n" in await b.ok("SELECT INBOX")
    assert await a.ok("FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))\r\n"]
    assert await b.ok("FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS ())\r\n"]
    # A new delivery is claimed by the first session to learn of it.
    world.deliver(message(2))
    lines = await b.ok("NOOP")
    assert lines == [b"* 2 EXISTS\r\n", b"* 1 RECENT\r\n"]
    lines = await a.ok("NOOP")
    assert lines == [b"* 2 EXISTS\r\n", b"* 1 RECENT\r\n"]  # its own earlier one only
    assert await a.ok("SEARCH RECENT") == [b"* SEARCH 1\r\n"]
    assert await b.ok("SEARCH RECENT") == [b"* SEARCH 2\r\n"]


async def test_other_sessions_changes_arrive_at_the_right_moments(world: SessionWorld) -> None:
    for n in range(1, 4):
        world.deliver(message(n))
    a = await world.connect()
    b = await world.connect()
    await a.ok("SELECT INBOX")
    await b.ok("SELECT INBOX")
    await b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert await a.ok("NOOP") == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"]
    await b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    # RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH ...
    lines, tagged = await a.command("FETCH 1:3 (UID)")
    assert b"NO [EXPUNGEISSUED]" in tagged  # as Dovecot: message 2 cannot be read any more
    assert not any(b"EXPUNGE" in x for x in lines)
    assert b"* 3 FETCH (UID 3)\r\n" in lines  # numbers are still as the client knows them
    assert not any(b"EXPUNGE" in x for x in await a.ok("SEARCH ALL"))
    # ... but at the next NOOP, and the numbers then shift.
    assert await a.ok("NOOP") == [b"* 2 EXPUNGE\r\n"]
    assert await a.ok("FETCH 2 (UID)") == [b"* 2 FETCH (UID 3)\r\n"]
    # UID commands may carry expunges.
    await b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    lines = await a.ok("UID FETCH 1:* (FLAGS)")
    assert lines[-1] == b"* 1 EXPUNGE\r\n" or b"* 1 EXPUNGE\r\n" in lines


async def test_qresync_session_gets_vanished_and_uid_in_fetch(world: SessionWorld) -> None:
    for n in range(1, 4):
        world.deliver(message(n))
    a = await world.connect()
    b = await world.connect()
    await a.ok("ENABLE QRESYNC")
    await a.ok("SELECT INBOX")
    await b.ok("SELECT INBOX")
    await b.ok("UID STORE 2 +FLAGS (\\Seen)")
    await b.ok("UID STORE 3 +FLAGS (\\Deleted)")
    await b.ok("UID EXPUNGE 3")
    lines = await a.ok("NOOP")
    assert lines[0] == b"* VANISHED 3\r\n"
    assert re.fullmatch(
        rb"\* 2 FETCH \(UID 2 FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)\r\n", lines[1]
    )


async def test_idle_wakes_on_delivery_and_ends_on_done(world: SessionWorld) -> None:
    a = await world.connect()
    await a.ok("SELECT INBOX")
    await a.send(b"I IDLE\r\n")
    assert (await a.read_line()).startswith(b"+ ")
    with trio.fail_after(5):
        started = trio.current_time()
        await trio.to_thread.run_sync(world.deliver, message(1))
        assert await a.read_line() == b"* 1 EXISTS\r\n"
        assert trio.current_time() - started < 1.0
        assert await a.read_line() == b"* 1 RECENT\r\n"
    await a.send(b"DONE\r\n")
    assert (await a.read_line()).startswith(b"I OK")
    assert await a.ok("NOOP") == []


async def test_idle_without_done_is_a_bad_continuation(world: SessionWorld) -> None:
    a = await world.connect()
    await a.send(b"I IDLE\r\n")
    assert (await a.read_line()).startswith(b"+ ")
    await a.send(b"NOT DONE\r\n")
    assert (await a.read_line()).startswith(b"I BAD")
    assert await a.ok("NOOP") == []


async def test_bad_input_keeps_the_connection(world: SessionWorld) -> None:
    a = await world.connect()
    _, tagged = await a.command("FROB")
    assert tagged.startswith(b"T2 BAD unknown command FROB")
    _untagged, tagged = await a.command("FETCH 1 (FLAGS)")  # nothing selected
    assert tagged.startswith(b"T3 BAD FETCH: select a mailbox first")
    # A malformed literal never swallows the next command.
    await a.send(b"X1 LOGIN {abc}\r\nX2 NOOP\r\n")
    assert (await a.read_line()).startswith(b"X1 BAD")
    assert (await a.read_line()).startswith(b"X2 OK")
    # The server refuses to send "+" for a literal of a command that could not run.
    await a.send(b"X3 AUTHENTICATE {5}\r\n")
    line = await a.read_line()
    assert line.startswith(b"X3 BAD"), line
    assert await a.ok("NOOP") == []


async def test_errors_map_to_response_codes(world: SessionWorld) -> None:
    a = await world.connect()
    _, tagged = await a.command("SELECT Nope")
    assert b"NO [NONEXISTENT]" in tagged
    _, tagged = await a.command("CREATE Archive")
    assert b"NO [ALREADYEXISTS]" in tagged
    _, tagged = await a.command("DELETE INBOX")
    assert b"NO [CANNOT]" in tagged
    _, tagged = await a.command('CREATE "../etc"')
    assert b"NO [CANNOT]" in tagged
    await a.ok("SELECT INBOX")
    world.deliver(message(1))
    await a.ok("NOOP")
    _, tagged = await a.command("COPY 1 Nope")
    assert b"NO [TRYCREATE]" in tagged
    _, tagged = await a.command("APPEND Nope {1+}\r\nx")
    assert b"NO [TRYCREATE]" in tagged
    _, tagged = await a.command("CREATE Calendar")  # a PIM folder, hidden from IMAP
    assert b"NO [ALREADYEXISTS]" in tagged
    _, tagged = await a.command("SELECT Calendar")
    assert b"NO [NONEXISTENT]" in tagged


async def test_rev2_searchres_sort_thread_condstore(world: SessionWorld) -> None:
    world.deliver(message(1, subject="beta"))
    world.deliver(message(2, subject="Re: beta"))
    world.deliver(message(3, subject="alpha"))
    a = await world.connect()
    assert await a.ok("ENABLE IMAP4rev2 CONDSTORE") == [b"* ENABLED IMAP4rev2 CONDSTORE\r\n"]
    lines = await a.ok("SELECT INBOX")
    assert not any(b"RECENT" in x for x in lines)
    assert await a.ok("SEARCH SUBJECT beta") == [b'* ESEARCH (TAG "T4") ALL 1:2\r\n']
    assert await a.ok("UID SEARCH RETURN (SAVE) SUBJECT alpha") == []
    assert await a.ok("FETCH $ (UID)") == [b"* 3 FETCH (UID 3)\r\n"]
    assert await a.ok("SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 3 1 2\r\n"]
    thread = await a.ok("THREAD REFERENCES UTF-8 ALL")
    assert thread[0].startswith(b"* THREAD ")
    lines = await a.ok("FETCH 1:* (MODSEQ)")
    modseq = max(int(re.findall(rb"MODSEQ \((\d+)\)", x)[0]) for x in lines)
    await a.ok("STORE 1 +FLAGS (\\Answered)")
    _, tagged = await a.command(f"STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)")
    assert b"OK [MODIFIED 1]" in tagged
    lines = await a.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert len(lines) == 1 and b"MODSEQ" in lines[0]


async def test_multiappend_quota_list_extended_status(world: SessionWorld) -> None:
    a = await world.connect()
    await a.send(b"M1 APPEND INBOX (\\Seen) {9+}\r\nSubject:1 (\\Flagged) {9+}\r\nSubject:2\r\n")
    _untagged, tagged = await a.until(b"M1")
    assert re.match(rb"M1 OK \[APPENDUID \d+ 1:2\]", tagged), tagged
    mailbox = world.store.open_mailbox("alice")
    mailbox.set_quota(1024 * 1024)
    lines = await a.ok("GETQUOTAROOT INBOX")
    assert lines[0] == b'* QUOTAROOT INBOX ""\r\n'
    assert re.fullmatch(rb'\* QUOTA "" \(STORAGE 1 1024\)\r\n', lines[1])
    await a.ok("CREATE Work/Reports")
    await a.ok("UNSUBSCRIBE Work")
    lines = await a.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work*" RETURN (CHILDREN)')
    assert lines == [
        b'* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SUBSCRIBED"))\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Work/Reports\r\n',
    ]
    lines = await a.ok('LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    assert lines[1] == b"* STATUS INBOX (MESSAGES 2 UNSEEN 1 SIZE 18)\r\n"
    # Over quota: refused before the "+" (the client never sends the octets).
    mailbox.set_quota(20)
    await a.send(b"Q APPEND INBOX {100}\r\n")
    assert (await a.read_line()).startswith(b"Q NO [OVERQUOTA]")


async def test_utf8_accept_mailbox_names(world: SessionWorld) -> None:
    a = await world.connect()
    await a.ok("CREATE &AMQ-pfel")  # "Äpfel" in modified UTF-7
    lines = await a.ok('LIST "" "*pfel"')
    assert lines == [b'* LIST (\\HasNoChildren) "/" &AMQ-pfel\r\n']
    await a.ok("ENABLE UTF8=ACCEPT")
    lines = await a.ok('LIST "" "*pfel"')
    assert lines == ['* LIST (\\HasNoChildren) "/" "Äpfel"\r\n'.encode()]
    await a.ok('SELECT "Äpfel"'.encode())


async def test_store_keywords_and_flags_round_trip_through_the_store(world: SessionWorld) -> None:
    uid = world.deliver(message(1))
    a = await world.connect()
    await a.ok("SELECT INBOX")
    lines = await a.ok("STORE 1 FLAGS (\\Seen $Forwarded Work)")
    assert lines == [b"* 1 FETCH (FLAGS (\\Seen $Forwarded Work \\Recent))\r\n"]
    snap = world.store.open_mailbox("alice").inbox.snapshot()
    assert snap.flags(uid) == frozenset({Flag.SEEN, Flag.FORWARDED})
    assert snap.keywords(uid) == frozenset({"Work"})


async def test_drain_ends_an_idle_session_with_bye(world: SessionWorld) -> None:
    a = await world.connect()
    await a.ok("NOOP")
    world.drain.start()
    assert await a.read_line() == b"* BYE server shutting down\r\n"


async def test_preauth_timeout(world: SessionWorld, autojump_clock: trio.testing.MockClock) -> None:
    a = await world.connect(login=False)
    started = trio.current_time()
    assert await a.read_line() == b"* BYE autologout: idle for too long\r\n"
    assert trio.current_time() - started >= world.settings.preauth_timeout


async def test_command_throttle_slows_a_flood(
    world: SessionWorld, autojump_clock: trio.testing.MockClock
) -> None:
    world.settings = ImapSettings(
        hostname="x", plaintext_on_loopback=True, commands_per_second=10, command_burst=5
    )
    a = await world.connect(login=False)
    started = trio.current_time()
    await a.send(b"".join(b"N%d NOOP\r\n" % i for i in range(25)))
    for i in range(25):
        assert (await a.read_line()).startswith(b"N%d OK" % i)
    # 5 at once, then 10 per second for the other 20.
    assert trio.current_time() - started >= 1.9


async def test_authenticate_plain_with_and_without_initial_response(world: SessionWorld) -> None:
    import base64

    token = base64.b64encode(f"\0alice@example.test\0{PASSWORD}".encode())
    a = await world.connect(login=False)
    await a.ok(b"AUTHENTICATE PLAIN " + token)
    b = await world.connect(login=False)
    await b.send(b"A AUTHENTICATE PLAIN\r\n")
    assert await b.read_line() == b"+ \r\n"
    await b.send(token + b"\r\n")
    assert (await b.read_line()).startswith(b"A OK [CAPABILITY")
    c = await world.connect(login=False)
    await c.send(b"A AUTHENTICATE PLAIN\r\n")
    await c.read_line()
    await c.send(b"*\r\n")
    assert (await c.read_line()).startswith(b"A BAD")  # RFC 3501 6.2.2: cancelled


async def test_plaintext_login_refused_off_loopback(world: SessionWorld) -> None:
    a = await world.connect(peer="192.0.2.1", tls=False, login=False)
    lines = await a.ok("CAPABILITY")
    assert b"LOGINDISABLED" in lines[0] and b"STARTTLS" in lines[0]
    _, tagged = await a.command(f"LOGIN alice@example.test {PASSWORD}")
    assert b"NO [PRIVACYREQUIRED]" in tagged


async def test_examine_shows_recent_but_does_not_claim_it(world: SessionWorld) -> None:
    world.deliver(message(1))
    a = await world.connect()
    assert b"* 1 RECENT\r\n" in await a.ok("EXAMINE INBOX")
    b = await world.connect()
    assert b"* 1 RECENT\r\n" in await b.ok("SELECT INBOX")  # still there to be claimed
    c = await world.connect()
    assert b"* 0 RECENT\r\n" in await c.ok("SELECT INBOX")
    _, tagged = await a.command("STORE 1 +FLAGS (\\Seen)")
    assert b"NO" in tagged  # read-only


async def test_client_leaving_during_idle_ends_the_session_quietly(world: SessionWorld) -> None:
    a = await world.connect()
    await a.ok("SELECT INBOX")
    await a.send(b"I IDLE\r\n")
    assert (await a.read_line()).startswith(b"+ ")
    await a.stream.aclose()
    await trio.to_thread.run_sync(world.deliver, message(1))
    await trio.sleep(0.05)  # the session task ends; a leak would fail the nursery


async def test_drain_during_idle_says_bye(world: SessionWorld) -> None:
    a = await world.connect()
    await a.ok("SELECT INBOX")
    await a.send(b"I IDLE\r\n")
    assert (await a.read_line()).startswith(b"+ ")
    world.drain.start()
    assert await a.read_line() == b"* BYE server shutting down\r\n"


async def test_savedate_is_the_time_a_message_entered_the_folder(world: SessionWorld) -> None:
    """RFC 8514: SAVEDATE is advertised, fetched and searched; a copy has its own."""
    world.deliver(message(1))
    client = await world.connect()
    capability = b"".join(await client.ok("CAPABILITY"))
    assert b" SAVEDATE" in capability
    await client.ok("SELECT INBOX")
    (line,) = await client.ok("FETCH 1 (SAVEDATE INTERNALDATE)")
    assert b'SAVEDATE "' in line and b"SAVEDATE NIL" not in line
    assert await client.ok("SEARCH SAVEDATESUPPORTED") == [b"* SEARCH 1\r\n"]
    assert await client.ok("SEARCH SAVEDSINCE 1-Jan-2000") == [b"* SEARCH 1\r\n"]
    assert await client.ok("SEARCH SAVEDBEFORE 1-Jan-2000") == [b"* SEARCH\r\n"]
    await client.ok("COPY 1 Archive")
    await client.ok("SELECT Archive")
    (copied,) = await client.ok("FETCH 1 (SAVEDATE)")
    assert b'SAVEDATE "' in copied
