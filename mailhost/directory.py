"""The directory: accepted domains, users, their addresses, address policies.

SQLite in WAL mode in the data folder. The CLI and the running server open the same
file; the server reads it on every lookup (reads are sub-millisecond and WAL readers
never wait for a writer), so CLI changes take effect without a restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mailhost import passwords
from mailhost.addresses import (
    AddressError,
    Template,
    local_part_from,
    normalize_address,
    normalize_domain,
    split_address,
)
from mailhost.database import Database

SCHEMA_VERSION = 1
COLLISION_SUFFIX_LIMIT = 99  # john.smith2 ... john.smith99, as Exchange numbers them
MAX_NAME = 256


class DirectoryError(Exception):
    """An administrative request that cannot be done; the message says why."""


class DomainType(StrEnum):
    # Exchange accepted domain types.
    AUTHORITATIVE = "authoritative"  # every recipient is a mailbox here
    INTERNAL_RELAY = "internal-relay"  # some recipients live on another server
    EXTERNAL_RELAY = "external-relay"  # we relay every recipient elsewhere


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    type: DomainType


@dataclass(frozen=True, slots=True)
class User:
    id: int
    guid: str  # names the mailbox folder; never changes
    primary_address: str
    alias: str
    display_name: str
    given_name: str
    surname: str
    password_hash: str
    address_policy: bool  # whether address policies manage this user's addresses


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    name: str
    priority: int
    applies_to: str  # "all" or a domain: users with an address there
    templates: tuple[Template, ...]


@dataclass(frozen=True, slots=True)
class PolicyChange:
    user: str  # primary address before the change
    address: str
    note: str  # "added", "primary", "collision: ...", "skipped: ..."


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains(
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users(
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    primary_address TEXT NOT NULL UNIQUE,
    alias TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    given_name TEXT NOT NULL,
    surname TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    address_policy INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses(
    address TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    origin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS addresses_user ON addresses(user_id);
CREATE TABLE IF NOT EXISTS send_connectors(
    name TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS address_policies(
    name TEXT PRIMARY KEY,
    priority INTEGER NOT NULL UNIQUE,
    applies_to TEXT NOT NULL,
    templates TEXT NOT NULL,
    created REAL NOT NULL
);
"""

_USER_COLUMNS = (
    "id, guid, primary_address, alias, display_name, given_name, surname, "
    "password_hash, address_policy"
)


class Directory:
    """One open directory database. Thread-safe; every method is a short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._database = Database(path, error=DirectoryError)
        except sqlite3.Error as exc:
            raise DirectoryError(f"directory {path}: {exc}") from None
        self._migrate()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.db

    def close(self) -> None:
        self._database.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._database.transaction()

    def _migrate(self) -> None:
        self._database.create(_SCHEMA, meta_table="meta", version=SCHEMA_VERSION, what="directory")

    # --- accepted domains ---------------------------------------------------------------

    def add_domain(self, name: str, type: DomainType = DomainType.AUTHORITATIVE) -> Domain:
        domain = _domain_or_error(name)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM domains WHERE name=?", (domain,)).fetchone():
                raise DirectoryError(f"domain {domain} is already an accepted domain")
            db.execute(
                "INSERT INTO domains(name, type, created) VALUES(?, ?, ?)",
                (domain, type.value, time.time()),
            )
        return Domain(domain, type)

    def domains(self) -> list[Domain]:
        rows = self._db.execute("SELECT name, type FROM domains ORDER BY name").fetchall()
        return [Domain(name, DomainType(kind)) for name, kind in rows]

    def domain(self, name: str) -> Domain | None:
        row = self._db.execute(
            "SELECT name, type FROM domains WHERE name=?", (name.lower().rstrip("."),)
        ).fetchone()
        return Domain(row[0], DomainType(row[1])) if row else None

    def remove_domain(self, name: str) -> None:
        domain = name.lower()
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM domains WHERE name=?", (domain,)).fetchone():
                raise DirectoryError(f"domain {domain} is not an accepted domain")
            used = db.execute(
                "SELECT count(*) FROM addresses WHERE address LIKE ? ESCAPE '\\'",
                ("%@" + domain.replace("_", "\\_").replace("%", "\\%"),),
            ).fetchone()[0]
            if used:
                raise DirectoryError(
                    f"domain {domain} still has {used} address(es); remove or change them first"
                )
            db.execute("DELETE FROM domains WHERE name=?", (domain,))

    # --- users --------------------------------------------------------------------------

    def add_user(
        self,
        address: str,
        password: str,
        *,
        display_name: str = "",
        given_name: str = "",
        surname: str = "",
        alias: str | None = None,
        address_policy: bool = True,
    ) -> User:
        primary = _address_or_error(address)
        for label, value in (("display name", display_name), ("given name", given_name)):
            _check_name(label, value)
        _check_name("surname", surname)
        alias = local_part_from(alias) if alias is not None else primary.split("@")[0]
        if not alias:
            raise DirectoryError("alias: must hold at least one letter or digit")
        password_hash = passwords.hash_password(_password_or_error(password))
        with self._transaction() as db:
            self._require_mail_domain(db, primary)
            if db.execute("SELECT 1 FROM addresses WHERE address=?", (primary,)).fetchone():
                raise DirectoryError(f"address {primary} is already in use")
            if db.execute("SELECT 1 FROM users WHERE alias=?", (alias,)).fetchone():
                raise DirectoryError(f"alias {alias} is already in use")
            cursor = db.execute(
                "INSERT INTO users(guid, primary_address, alias, display_name, given_name, "
                "surname, password_hash, address_policy, created) VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    uuid.uuid4().hex,
                    primary,
                    alias,
                    display_name or primary,
                    given_name,
                    surname,
                    password_hash,
                    int(address_policy),
                    time.time(),
                ),
            )
            user_id = cursor.lastrowid
            assert user_id is not None
            db.execute(
                "INSERT INTO addresses(address, user_id, origin) VALUES(?, ?, 'primary')",
                (primary, user_id),
            )
            if address_policy:
                policy = self._policy_for(db, user_id)
                if policy is not None:
                    self._apply_to_user(db, policy, user_id)
        user = self.user_by_id(user_id)
        assert user is not None
        return user

    def users(self) -> list[User]:
        rows = self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users ORDER BY primary_address"  # noqa: S608
        ).fetchall()
        return [_user(row) for row in rows]

    def user_by_id(self, user_id: int) -> User | None:
        row = self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id=?",  # noqa: S608
            (user_id,),
        ).fetchone()
        return _user(row) if row else None

    def user_by_address(self, address: str) -> User | None:
        """The user owning `address` (primary or any other), case-insensitively."""
        row = self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = "  # noqa: S608
            "(SELECT user_id FROM addresses WHERE address=?)",
            (address.strip().lower(),),
        ).fetchone()
        return _user(row) if row else None

    def search_users(self, query: str, *, limit: int) -> list[User]:
        """Users matching what someone typed in an address field: an exact address, or a
        prefix of any address, alias or word of the display name (case-insensitive)."""
        text = query.strip().lower()
        if not text or limit < 1:
            return []
        like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ("  # noqa: S608
            "SELECT user_id FROM addresses WHERE address LIKE ? ESCAPE '\\' "
            "UNION SELECT id FROM users WHERE alias LIKE ? ESCAPE '\\' "
            "OR lower(display_name) LIKE ? ESCAPE '\\' "
            "OR lower(display_name) LIKE ? ESCAPE '\\') ORDER BY display_name LIMIT ?",
            (like, like, like, "% " + like, limit),
        ).fetchall()
        return [_user(row) for row in rows]

    def user_for_login(self, login: str) -> User | None:
        """Resolve what a client types as its user name: an address, `DOMAIN\\user`, or the
        alias alone (EAS lets phones send any of the three, MS-ASHTTP 2.2.1.1.2.1)."""
        name = login.strip()
        if "\\" in name:
            name = name.split("\\", 1)[1]
        if "@" in name:
            return self.user_by_address(name)
        row = self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE alias=?",  # noqa: S608
            (name.lower(),),
        ).fetchone()
        return _user(row) if row else None

    def user(self, address: str) -> User:
        user = self.user_by_address(address)
        if user is None:
            raise DirectoryError(f"no user with the address {address.strip().lower()}")
        return user

    def addresses_of(self, user_id: int) -> list[str]:
        rows = self._db.execute(
            "SELECT address FROM addresses WHERE user_id=? ORDER BY origin != 'primary', address",
            (user_id,),
        ).fetchall()
        return [row[0] for row in rows]

    def set_password(self, address: str, password: str) -> None:
        password_hash = passwords.hash_password(_password_or_error(password))
        user = self.user(address)
        with self._transaction() as db:
            db.execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user.id))

    def remove_user(self, address: str) -> User:
        user = self.user(address)
        with self._transaction() as db:
            db.execute("DELETE FROM users WHERE id=?", (user.id,))
        return user

    def add_address(self, user_address: str, address: str) -> None:
        extra = _address_or_error(address)
        user = self.user(user_address)
        with self._transaction() as db:
            self._require_mail_domain(db, extra)
            if db.execute("SELECT 1 FROM addresses WHERE address=?", (extra,)).fetchone():
                raise DirectoryError(f"address {extra} is already in use")
            db.execute(
                "INSERT INTO addresses(address, user_id, origin) VALUES(?, ?, 'manual')",
                (extra, user.id),
            )

    def remove_address(self, user_address: str, address: str) -> None:
        user = self.user(user_address)
        extra = address.strip().lower()
        if extra == user.primary_address:
            raise DirectoryError(f"{extra} is the primary address; set another primary first")
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM addresses WHERE address=? AND user_id=?", (extra, user.id)
            )
            if cursor.rowcount == 0:
                raise DirectoryError(f"{extra} is not an address of {user.primary_address}")

    def verify_login(
        self, login: str, password: str, cache: passwords.VerifiedCredentials | None = None
    ) -> User | None:
        """The user if `password` is theirs; None otherwise. Costs one Argon2id hash unless
        `cache` vouches for it; an unknown user costs the same as a wrong password."""
        return self.verify_user(self.user_for_login(login), password, cache)

    def verify_user(
        self,
        user: User | None,
        password: str,
        cache: passwords.VerifiedCredentials | None = None,
    ) -> User | None:
        """`verify_login` for a login already resolved to `user` (None: nobody)."""
        if user is None:
            passwords.burn_verification_time(password)
            return None
        if cache is not None and cache.check(user.id, user.password_hash, password):
            return user
        if not passwords.verify_password(password, user.password_hash):
            return None
        if cache is not None:
            cache.remember(user.id, user.password_hash, password)
        return user

    # --- send connectors ----------------------------------------------------------------
    # Stored as JSON settings (transport.routing.SendConnector's fields); the transport
    # validates them. A smart host password is kept here in the clear because AUTH needs
    # it; the directory file is readable by the service user only.

    def set_send_connector(self, name: str, settings: dict[str, object], *, new: bool) -> None:
        _check_name("connector name", name, required=True)
        with self._transaction() as db:
            exists = db.execute("SELECT 1 FROM send_connectors WHERE name=?", (name,)).fetchone()
            if new and exists:
                raise DirectoryError(f"send connector {name!r} already exists")
            if not new and not exists:
                raise DirectoryError(f"no send connector named {name!r}")
            db.execute(
                "INSERT OR REPLACE INTO send_connectors(name, settings, created) VALUES(?,?,?)",
                (name, json.dumps(settings, sort_keys=True), time.time()),
            )

    def send_connectors(self) -> list[tuple[str, dict[str, object]]]:
        rows = self._db.execute(
            "SELECT name, settings FROM send_connectors ORDER BY name"
        ).fetchall()
        return [(str(name), dict(json.loads(str(settings)))) for name, settings in rows]

    def send_connector(self, name: str) -> dict[str, object]:
        for found, settings in self.send_connectors():
            if found == name:
                return settings
        raise DirectoryError(f"no send connector named {name!r}")

    def remove_send_connector(self, name: str) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM send_connectors WHERE name=?", (name,)).rowcount == 0:
                raise DirectoryError(f"no send connector named {name!r}")

    def data_version(self) -> tuple[int, int, int]:
        """Changes whenever another connection (the CLI) commits: a cheap cache key."""
        return self._database.data_version()

    # --- address policies ---------------------------------------------------------------

    def add_address_policy(
        self, name: str, priority: int, templates: Sequence[str], applies_to: str = "all"
    ) -> AddressPolicy:
        _check_name("policy name", name, required=True)
        if priority < 1:
            raise DirectoryError("priority: must be 1 or more (1 is applied first)")
        try:
            parsed = tuple(Template.parse(t) for t in templates)
        except AddressError as exc:
            raise DirectoryError(str(exc)) from None
        if sum(t.primary for t in parsed) != 1:
            raise DirectoryError(
                "templates: exactly one must be the primary address (prefix it with SMTP:)"
            )
        scope = applies_to.strip().lower()
        if scope != "all":
            scope = _domain_or_error(scope)
        with self._transaction() as db:
            known = {row[0] for row in db.execute("SELECT name FROM domains")}
            for template in parsed:
                if template.domain not in known:
                    raise DirectoryError(
                        f"template {template}: {template.domain} is not an accepted domain"
                    )
            if scope != "all" and scope not in known:
                raise DirectoryError(f"applies-to: {scope} is not an accepted domain")
            if db.execute("SELECT 1 FROM address_policies WHERE name=?", (name,)).fetchone():
                raise DirectoryError(f"address policy {name!r} already exists")
            if db.execute(
                "SELECT 1 FROM address_policies WHERE priority=?", (priority,)
            ).fetchone():
                raise DirectoryError(f"priority {priority} is taken by another policy")
            db.execute(
                "INSERT INTO address_policies(name, priority, applies_to, templates, created) "
                "VALUES(?,?,?,?,?)",
                (name, priority, scope, json.dumps([str(t) for t in parsed]), time.time()),
            )
        return AddressPolicy(name, priority, scope, parsed)

    def address_policies(self) -> list[AddressPolicy]:
        rows = self._db.execute(
            "SELECT name, priority, applies_to, templates FROM address_policies ORDER BY priority"
        ).fetchall()
        return [_policy(row) for row in rows]

    def remove_address_policy(self, name: str) -> None:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM address_policies WHERE name=?", (name,))
            if cursor.rowcount == 0:
                raise DirectoryError(f"no address policy named {name!r}")

    def apply_address_policy(self, name: str) -> list[PolicyChange]:
        """Generate addresses for every user this policy governs (Exchange's
        Update-EmailAddressPolicy). A user is governed by the highest-priority policy that
        applies to them. Existing addresses are kept; an address taken by someone else gets
        a number (john.smith2) and the change says so."""
        changes: list[PolicyChange] = []
        with self._transaction() as db:
            row = db.execute(
                "SELECT name, priority, applies_to, templates FROM address_policies WHERE name=?",
                (name,),
            ).fetchone()
            if row is None:
                raise DirectoryError(f"no address policy named {name!r}")
            policy = _policy(row)
            user_ids = [r[0] for r in db.execute("SELECT id FROM users WHERE address_policy=1")]
            for user_id in user_ids:
                governing = self._policy_for(db, user_id)
                if governing is not None and governing.name == policy.name:
                    changes.extend(self._apply_to_user(db, policy, user_id))
        return changes

    def _policy_for(self, db: sqlite3.Connection, user_id: int) -> AddressPolicy | None:
        domains = {
            r[0].rsplit("@", 1)[1]
            for r in db.execute("SELECT address FROM addresses WHERE user_id=?", (user_id,))
        }
        for row in db.execute(
            "SELECT name, priority, applies_to, templates FROM address_policies ORDER BY priority"
        ):
            if row[2] == "all" or row[2] in domains:
                return _policy(row)
        return None

    def _apply_to_user(
        self, db: sqlite3.Connection, policy: AddressPolicy, user_id: int
    ) -> list[PolicyChange]:
        row = db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id=?",  # noqa: S608
            (user_id,),
        ).fetchone()
        user = _user(row)
        changes: list[PolicyChange] = []
        for template in policy.templates:
            wanted = template.expand(
                given=user.given_name,
                surname=user.surname,
                alias=user.alias,
                display=user.display_name,
            )
            if wanted is None:
                changes.append(
                    PolicyChange(user.primary_address, str(template), "skipped: a name is empty")
                )
                continue
            address, note = self._claim(db, user.id, wanted)
            if address is None:
                changes.append(PolicyChange(user.primary_address, wanted, note))
                continue
            if template.primary and address != user.primary_address:
                db.execute("UPDATE users SET primary_address=? WHERE id=?", (address, user.id))
                db.execute(
                    "UPDATE addresses SET origin='policy' WHERE user_id=? AND origin='primary'",
                    (user.id,),
                )
                db.execute("UPDATE addresses SET origin='primary' WHERE address=?", (address,))
                note = note + "; now the primary address" if note else "now the primary address"
            if note:
                changes.append(PolicyChange(user.primary_address, address, note))
        return changes

    def _claim(self, db: sqlite3.Connection, user_id: int, wanted: str) -> tuple[str | None, str]:
        local, domain = wanted.rsplit("@", 1)
        for n in range(1, COLLISION_SUFFIX_LIMIT + 1):
            candidate = wanted if n == 1 else f"{local[: 64 - len(str(n))]}{n}@{domain}"
            owner = db.execute(
                "SELECT user_id FROM addresses WHERE address=?", (candidate,)
            ).fetchone()
            if owner is None:
                db.execute(
                    "INSERT INTO addresses(address, user_id, origin) VALUES(?, ?, 'policy')",
                    (candidate, user_id),
                )
                note = "added" if n == 1 else f"added; collision: {wanted} belongs to another user"
                return candidate, note
            if owner[0] == user_id:
                return candidate, ""
        return None, f"skipped: {wanted} and its numbered variants are all taken"

    @staticmethod
    def _require_mail_domain(db: sqlite3.Connection, address: str) -> None:
        domain = address.rsplit("@", 1)[1]
        row = db.execute("SELECT type FROM domains WHERE name=?", (domain,)).fetchone()
        if row is None:
            raise DirectoryError(f"{domain} is not an accepted domain (mailhost domain add)")
        if row[0] == DomainType.EXTERNAL_RELAY:
            raise DirectoryError(f"{domain} is an external relay domain: it holds no mailboxes")


def _user(row: Sequence[object]) -> User:
    return User(
        id=int(str(row[0])),
        guid=str(row[1]),
        primary_address=str(row[2]),
        alias=str(row[3]),
        display_name=str(row[4]),
        given_name=str(row[5]),
        surname=str(row[6]),
        password_hash=str(row[7]),
        address_policy=bool(row[8]),
    )


def _policy(row: Sequence[object]) -> AddressPolicy:
    templates = tuple(Template.parse(t) for t in json.loads(str(row[3])))
    return AddressPolicy(str(row[0]), int(str(row[1])), str(row[2]), templates)


def _domain_or_error(name: str) -> str:
    try:
        return normalize_domain(name)
    except AddressError as exc:
        raise DirectoryError(str(exc)) from None


def _address_or_error(address: str) -> str:
    try:
        split_address(address)
        return normalize_address(address)
    except AddressError as exc:
        raise DirectoryError(str(exc)) from None


def _password_or_error(password: str) -> str:
    if not password:
        raise DirectoryError("password: must not be empty")
    if len(password.encode("utf-8", "surrogatepass")) > passwords.MAX_PASSWORD_BYTES:
        raise DirectoryError(f"password: longer than {passwords.MAX_PASSWORD_BYTES} bytes")
    if any(c in password for c in "\r\n\x00"):
        raise DirectoryError("password: must not hold line breaks or NUL")
    return password


def _check_name(label: str, value: str, *, required: bool = False) -> None:
    if required and not value.strip():
        raise DirectoryError(f"{label}: must not be empty")
    if len(value) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise DirectoryError(f"{label}: at most {MAX_NAME} printable characters")
