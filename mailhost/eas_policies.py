"""Mobile device administration in the directory database: ActiveSync mailbox policies
and which user has which, device access rules and the default access level, the audit
trail of what administrators did to devices, and users' out-of-office settings (which
phones set through ActiveSync) with the history of whom an auto-reply has answered.

Like the device registry, this opens `directory.sqlite3` with a connection of its own
and keeps to its own tables (`eas_policies`, `eas_policy_users`, `eas_access_rules`,
`eas_org`, `eas_audit`, `oof_settings`, `oof_replies`), so the directory code never
sees them; WAL lets the CLI change them while the server runs, and the server sees a
change on its next request (every write bumps a generation number that reads check).

A user is named by their mailbox id (the directory's GUID), which never changes, so a
renamed user keeps their policy and their out-of-office state.

`EasAdministration` is at once the server's `PolicySource` (protocols.activesync.policy),
`AccessSource` (protocols.activesync.access) and `OofStore` (transport.autoreply).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mailhost.database import Database
from protocols.activesync.access import (
    MAX_RULE_VALUE,
    AccessConfiguration,
    AccessRule,
    Characteristic,
)
from protocols.activesync.devices import DeviceAccess
from protocols.activesync.policy import (
    DEFAULT_POLICY,
    DEFAULT_POLICY_NAME,
    Policy,
    PolicyValueError,
    policy_errors,
    policy_from_record,
    policy_to_record,
)
from protocols.auth import Account
from transport.autoreply import OofReply, OofSettings, OofState

SCHEMA_VERSION: Final = 1
MAX_POLICY_NAME: Final = 64  # Exchange: a policy name is at most 64 characters
MAX_RULES: Final = 1000  # access rules an organisation may have
OOF_SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eas_org(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eas_policies(
    name TEXT PRIMARY KEY COLLATE NOCASE,
    is_default INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL,
    modified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS eas_policy_users(
    owner TEXT PRIMARY KEY,
    policy TEXT NOT NULL COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS eas_access_rules(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    characteristic TEXT NOT NULL,
    value TEXT NOT NULL,
    access TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS eas_audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eas_audit_device ON eas_audit(owner, device_id);
CREATE TABLE IF NOT EXISTS oof_settings(
    owner TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    period INTEGER NOT NULL,
    modified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS oof_replies(
    owner TEXT NOT NULL,
    sender TEXT NOT NULL,
    period INTEGER NOT NULL,
    sent REAL NOT NULL,
    PRIMARY KEY(owner, sender)
);
"""


class AdministrationError(Exception):
    """An administrative request that cannot be done; the message is one line."""


@dataclass(frozen=True, slots=True)
class PolicyRow:
    policy: Policy
    is_default: bool
    users: int  # users assigned to it by name (the default also covers the unassigned)
    modified: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: float
    actor: str
    action: str
    owner: str
    device_id: str
    detail: str


class EasAdministration:
    """See the module docstring. Thread-safe: a connection per thread, and a lock around
    the cache of policies and rules."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._database = Database(path, synchronous="NORMAL", error=AdministrationError)
        self._lock = threading.RLock()
        self._cache_version: int | None = None
        self._policies: dict[str, Policy] = {}
        self._assignments: dict[str, str] = {}
        self._default_name = DEFAULT_POLICY_NAME
        self._access: AccessConfiguration | None = None
        self._migrate()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.db

    def close(self) -> None:
        self._database.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._database.transaction() as db:
            yield db
            # Every change moves the generation, which every process's cache checks.
            db.execute(
                "INSERT INTO eas_org(key, value) VALUES('generation', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    def _migrate(self) -> None:
        self._database.create(
            _SCHEMA, meta_table="eas_org", version=SCHEMA_VERSION, what="ActiveSync administration"
        )
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM eas_policies LIMIT 1").fetchone():
                # The Default policy exists from the start, as in Exchange.
                db.execute(
                    "INSERT INTO eas_policies(name, is_default, record, modified) "
                    "VALUES(?, 1, ?, ?)",
                    (DEFAULT_POLICY_NAME, _dump(policy_to_record(DEFAULT_POLICY)), time.time()),
                )

    # --- the cache the server reads per request ------------------------------------------

    def _fresh(self) -> None:
        """Reload the cached policies, assignments and rules if anyone changed them."""
        row = self._db.execute("SELECT value FROM eas_org WHERE key='generation'").fetchone()
        version = int(row[0]) if row else 0
        if version == self._cache_version:
            return
        policies: dict[str, Policy] = {}
        default_name = DEFAULT_POLICY_NAME
        for name, is_default, record in self._db.execute(
            "SELECT name, is_default, record FROM eas_policies"
        ):
            policies[name.lower()] = _load_policy(record)
            if is_default:
                default_name = name
        self._policies = policies
        self._default_name = default_name
        self._assignments = {
            owner: policy.lower()
            for owner, policy in self._db.execute("SELECT owner, policy FROM eas_policy_users")
        }
        self._access = AccessConfiguration(
            rules=tuple(self._rules(self._db)), default=self._default_access(self._db)
        )
        self._cache_version = version

    # --- PolicySource ------------------------------------------------------------------

    def policy_for(self, account: Account) -> Policy:
        return self.policy_for_owner(account.mailbox_id)

    def policy_for_owner(self, owner: str) -> Policy:
        with self._lock:
            self._fresh()
            name = self._assignments.get(owner, self._default_name.lower())
            policy = self._policies.get(name) or self._policies.get(self._default_name.lower())
            return policy or DEFAULT_POLICY

    # --- policies ----------------------------------------------------------------------

    def policies(self) -> list[PolicyRow]:
        with self._lock:
            counts = dict(
                self._db.execute(
                    "SELECT lower(policy), count(*) FROM eas_policy_users GROUP BY lower(policy)"
                ).fetchall()
            )
            rows = self._db.execute(
                "SELECT name, is_default, record, modified FROM eas_policies ORDER BY name"
            ).fetchall()
        return [
            PolicyRow(_load_policy(record), bool(is_default), counts.get(name.lower(), 0), when)
            for name, is_default, record, when in rows
        ]

    def policy_row(self, name: str) -> PolicyRow:
        for row in self.policies():
            if row.policy.name.lower() == name.strip().lower():
                return row
        raise AdministrationError(f"no mobile device mailbox policy named {name!r}")

    def policy(self, name: str) -> Policy:
        return self.policy_row(name).policy

    def add_policy(self, policy: Policy, *, make_default: bool = False) -> Policy:
        _check_policy_name(policy.name)
        _check_policy(policy)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM eas_policies WHERE name=?", (policy.name,)).fetchone():
                raise AdministrationError(f"a policy named {policy.name!r} exists already")
            if make_default:
                db.execute("UPDATE eas_policies SET is_default=0")
            db.execute(
                "INSERT INTO eas_policies(name, is_default, record, modified) VALUES(?,?,?,?)",
                (policy.name, int(make_default), _dump(policy_to_record(policy)), time.time()),
            )
        return policy

    def update_policy(
        self, name: str, changes: dict[str, Any], *, make_default: bool = False
    ) -> Policy:
        """Apply `changes` (setting name -> value) to the policy called `name`. Devices
        under it provision again on their next request (its stamp changes)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT name, record FROM eas_policies WHERE name=?", (name.strip(),)
            ).fetchone()
            if row is None:
                raise AdministrationError(f"no mobile device mailbox policy named {name!r}")
            current = _load_policy(row[1])
            try:
                updated = dataclasses.replace(current, **changes)
            except TypeError as exc:
                raise AdministrationError(str(exc)) from None
            _check_policy(updated)
            if updated.name != current.name:
                _check_policy_name(updated.name)
                clash = db.execute(
                    "SELECT 1 FROM eas_policies WHERE name=?", (updated.name,)
                ).fetchone()
                if clash and updated.name.lower() != current.name.lower():
                    raise AdministrationError(f"a policy named {updated.name!r} exists already")
                db.execute(
                    "UPDATE eas_policy_users SET policy=? WHERE policy=?",
                    (updated.name, current.name),
                )
            if make_default:
                db.execute("UPDATE eas_policies SET is_default=0")
            db.execute(
                "UPDATE eas_policies SET name=?, record=?, modified=?, "
                "is_default=CASE WHEN ? THEN 1 ELSE is_default END WHERE name=?",
                (
                    updated.name,
                    _dump(policy_to_record(updated)),
                    time.time(),
                    int(make_default),
                    current.name,
                ),
            )
        return updated

    def remove_policy(self, name: str) -> None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT name, is_default FROM eas_policies WHERE name=?", (name.strip(),)
            ).fetchone()
            if row is None:
                raise AdministrationError(f"no mobile device mailbox policy named {name!r}")
            if row[1]:
                raise AdministrationError(
                    f"{row[0]!r} is the default policy; make another one the default first"
                )
            users = db.execute(
                "SELECT count(*) FROM eas_policy_users WHERE policy=?", (row[0],)
            ).fetchone()[0]
            if users:
                raise AdministrationError(
                    f"{row[0]!r} is assigned to {users} user(s); assign them another first"
                )
            db.execute("DELETE FROM eas_policies WHERE name=?", (row[0],))

    def assign(self, owner: str, name: str | None) -> str:
        """Give the user `owner` (a mailbox id) the policy `name`; None: the default.
        Returns the name of the policy that now applies."""
        with self._transaction() as db:
            if name is None:
                db.execute("DELETE FROM eas_policy_users WHERE owner=?", (owner,))
                row = db.execute("SELECT name FROM eas_policies WHERE is_default=1").fetchone()
                return str(row[0]) if row else DEFAULT_POLICY_NAME
            row = db.execute(
                "SELECT name FROM eas_policies WHERE name=?", (name.strip(),)
            ).fetchone()
            if row is None:
                raise AdministrationError(f"no mobile device mailbox policy named {name!r}")
            db.execute(
                "INSERT OR REPLACE INTO eas_policy_users(owner, policy) VALUES(?, ?)",
                (owner, row[0]),
            )
            return str(row[0])

    def assignment(self, owner: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT policy FROM eas_policy_users WHERE owner=?", (owner,)
            ).fetchone()
        return str(row[0]) if row else None

    # --- device access -----------------------------------------------------------------

    @staticmethod
    def _rules(db: sqlite3.Connection) -> list[AccessRule]:
        return [
            AccessRule(int(rid), Characteristic(kind), value, DeviceAccess(access))
            for rid, kind, value, access in db.execute(
                "SELECT id, characteristic, value, access FROM eas_access_rules ORDER BY id"
            )
        ]

    @staticmethod
    def _default_access(db: sqlite3.Connection) -> DeviceAccess:
        row = db.execute("SELECT value FROM eas_org WHERE key='default_access'").fetchone()
        return DeviceAccess(row[0]) if row else DeviceAccess.ALLOWED

    def access_configuration(self) -> AccessConfiguration:
        with self._lock:
            self._fresh()
            assert self._access is not None
            return self._access

    def access_rules(self) -> list[AccessRule]:
        with self._lock:
            return self._rules(self._db)

    def add_access_rule(
        self, characteristic: Characteristic, value: str, access: DeviceAccess
    ) -> AccessRule:
        value = value.strip()
        if not value or len(value) > MAX_RULE_VALUE or any(ord(c) < 32 for c in value):
            raise AdministrationError(
                f"a rule needs a value of 1 to {MAX_RULE_VALUE} printable characters"
            )
        if characteristic is Characteristic.DEVICE_ID:
            value = value.lower()  # device ids are stored normalised
        with self._transaction() as db:
            count = db.execute("SELECT count(*) FROM eas_access_rules").fetchone()[0]
            if count >= MAX_RULES:
                raise AdministrationError(f"there are {count} rules already (at most {MAX_RULES})")
            for rule in self._rules(db):
                if (rule.characteristic, rule.value.lower()) == (characteristic, value.lower()):
                    raise AdministrationError(
                        f"rule {rule.id} already covers {characteristic.value} {value} "
                        f"({rule.access.value}); remove it first"
                    )
            cursor = db.execute(
                "INSERT INTO eas_access_rules(characteristic, value, access, created) "
                "VALUES(?,?,?,?)",
                (characteristic.value, value, access.value, time.time()),
            )
            rule_id = cursor.lastrowid
        assert rule_id is not None
        return AccessRule(rule_id, characteristic, value, access)

    def remove_access_rule(self, rule_id: int) -> AccessRule:
        with self._transaction() as db:
            rules = {r.id: r for r in self._rules(db)}
            if rule_id not in rules:
                raise AdministrationError(f"no device access rule {rule_id}")
            db.execute("DELETE FROM eas_access_rules WHERE id=?", (rule_id,))
            return rules[rule_id]

    def default_access(self) -> DeviceAccess:
        with self._lock:
            return self._default_access(self._db)

    def set_default_access(self, access: DeviceAccess) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO eas_org(key, value) VALUES('default_access', ?)",
                (access.value,),
            )

    # --- audit -------------------------------------------------------------------------

    def audit(self, actor: str, action: str, owner: str, device_id: str, detail: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO eas_audit(time, actor, action, owner, device_id, detail) "
                "VALUES(?,?,?,?,?,?)",
                (time.time(), actor, action, owner, device_id, detail),
            )

    def audit_entries(self, owner: str, device_id: str) -> list[AuditEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT time, actor, action, owner, device_id, detail FROM eas_audit "
                "WHERE owner=? AND device_id=? ORDER BY id",
                (owner, device_id),
            ).fetchall()
        return [AuditEntry(*row) for row in rows]

    # --- out of office (transport.autoreply.OofStore) ------------------------------------

    def oof_settings(self, mailbox_id: str) -> OofSettings:
        with self._lock:
            row = self._db.execute(
                "SELECT record, period FROM oof_settings WHERE owner=?", (mailbox_id,)
            ).fetchone()
        if row is None:
            return _NO_OOF  # most users, at every delivery: one shared (frozen) value
        return _load_oof(row[0], int(row[1]))

    def set_oof_settings(self, mailbox_id: str, settings: OofSettings) -> OofSettings:
        problems = settings.errors()
        if problems:
            raise AdministrationError(problems[0])
        with self._transaction() as db:
            row = db.execute(
                "SELECT period FROM oof_settings WHERE owner=?", (mailbox_id,)
            ).fetchone()
            period = (int(row[0]) if row else 0) + 1
            saved = dataclasses.replace(settings, period=period)
            db.execute(
                "INSERT OR REPLACE INTO oof_settings(owner, record, period, modified) "
                "VALUES(?,?,?,?)",
                (mailbox_id, _dump(_oof_record(saved)), period, time.time()),
            )
            # A new period: every sender may be answered once again.
            db.execute("DELETE FROM oof_replies WHERE owner=?", (mailbox_id,))
        return saved

    def claim_reply(self, mailbox_id: str, sender: str, period: int, now: float) -> bool:
        with self._transaction() as db:
            row = db.execute(
                "SELECT period FROM oof_replies WHERE owner=? AND sender=?",
                (mailbox_id, sender.lower()),
            ).fetchone()
            if row is not None and int(row[0]) == period:
                return False
            db.execute(
                "INSERT OR REPLACE INTO oof_replies(owner, sender, period, sent) VALUES(?,?,?,?)",
                (mailbox_id, sender.lower(), period, now),
            )
            return True


# --- records -------------------------------------------------------------------------------


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _load_policy(text: str) -> Policy:
    try:
        return policy_from_record(json.loads(text))
    except (ValueError, TypeError, PolicyValueError) as exc:
        raise AdministrationError(f"a stored policy cannot be read: {exc}") from None


def _check_policy_name(name: str) -> None:
    if not name.strip() or len(name) > MAX_POLICY_NAME or any(ord(c) < 32 for c in name):
        raise AdministrationError(
            f"a policy name is 1 to {MAX_POLICY_NAME} printable characters, got {name!r}"
        )


def _check_policy(policy: Policy) -> None:
    problems = policy_errors(policy)
    if problems:
        raise AdministrationError(problems[0])


def _oof_record(settings: OofSettings) -> dict[str, Any]:
    record = dataclasses.asdict(settings)
    record["state"] = settings.state.value
    record["v"] = OOF_SCHEMA_VERSION
    return record


_NO_OOF = OofSettings()


def _load_oof(text: str, period: int) -> OofSettings:
    record = json.loads(text)
    if record.get("v", 0) > OOF_SCHEMA_VERSION:
        raise AdministrationError("stored out-of-office settings are newer than this program")

    def reply(value: Any) -> OofReply:
        value = value or {}
        return OofReply(
            enabled=bool(value.get("enabled")),
            text=str(value.get("text") or ""),
            html=bool(value.get("html")),
        )

    return OofSettings(
        state=OofState(record.get("state", OofState.DISABLED.value)),
        start=record.get("start"),
        end=record.get("end"),
        internal=reply(record.get("internal")),
        known_external=reply(record.get("known_external")),
        unknown_external=reply(record.get("unknown_external")),
        period=period,
    )
