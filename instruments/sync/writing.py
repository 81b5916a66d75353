"""Writing a parsed dump: stage it, match it to the master, apply it set-based.

Rows are staged in a temporary table (PostgreSQL: COPY; SQLite: batched executemany),
then a handful of set-based statements match, delist, update and insert. The caller
holds the transaction: on any failure, nothing is written.

Matching (an instrument's identity is its contract, its token is unique only among
listed rows):

1. a listed row with the same key (Kite token / Upstox key) and the same contract is
   the same instrument;
2. otherwise a row (listed or delisted) with the same contract is: its key changed, or
   it came back (relisted);
3. otherwise the row is new.

Listed rows in the dump's scope that nothing matched are delisted (and deactivated).

Kite reuses tokens, so a token's latest tick may belong to the contract that held it
before: ``apply`` also reports every token whose listed owner changes (``moved_tokens``),
for the caller to drop their latest ticks once the sync has committed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection

from instruments.sync.parsing import ROW_FIELDS, Row

STAGING = "sync_incoming"
BATCH_ROWS = 5000
CONTRACT = ("exchange", "tradingsymbol", "instrument_type", "expiry", "strike")
# Columns compared to decide "updated" (last_price moves every day and is refreshed
# silently; a changed last_price alone is not a change to the contract's metadata).
COMPARED = (
    "exchange_token",
    "instrument_key",
    "instrument_token",
    "name",
    "tick_size",
    "lot_size",
    "segment",
)

_STAGING_DDL = {
    "postgresql": f"""
        CREATE TEMPORARY TABLE {STAGING} (
            line integer NOT NULL,
            instrument_token bigint, exchange_token bigint, instrument_key varchar(64),
            tradingsymbol varchar(64) NOT NULL, name varchar(128), last_price numeric(18,4),
            expiry date, strike numeric(18,4), tick_size numeric(12,6), lot_size integer,
            instrument_type varchar(16) NOT NULL, segment varchar(32) NOT NULL, exchange varchar(16) NOT NULL,
            match_id bigint, was_listed boolean, changed boolean
        ) ON COMMIT DROP""",
    "sqlite": f"""
        CREATE TEMPORARY TABLE {STAGING} (
            line integer NOT NULL,
            instrument_token bigint, exchange_token bigint, instrument_key varchar(64),
            tradingsymbol varchar(64) NOT NULL, name varchar(128), last_price decimal,
            expiry date, strike decimal, tick_size decimal, lot_size integer,
            instrument_type varchar(16) NOT NULL, segment varchar(32) NOT NULL, exchange varchar(16) NOT NULL,
            match_id bigint, was_listed bool, changed bool
        )""",
}


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    delisted: int = 0
    relisted: int = 0
    deactivated: int = 0
    # Kite tokens whose listed owner changes: a new contract, a row's new or old token,
    # a relisted row, a delisted row.
    moved_tokens: set[int] = field(default_factory=set)


def _vendor() -> str:
    return connection.vendor


def _same(a: str, b: str) -> str:
    """Null-safe equality in this database's dialect."""
    return f"{a} IS NOT DISTINCT FROM {b}" if _vendor() == "postgresql" else f"{a} IS {b}"


def _contract_equal(left: str, right: str) -> str:
    return " AND ".join(
        _same(f"{left}.{c}", f"{right}.{c}") if c == "expiry" else f"{left}.{c} = {right}.{c}"
        for c in CONTRACT
    )


def _key_column(source: str) -> str:
    return "instrument_token" if source == "kite" else "instrument_key"


def _sqlite_value(value: Any) -> Any:
    # Django stores decimals on SQLite as text-compatible numerics; pass strings so no
    # float ever touches a price.
    if value is None or isinstance(value, int | str):
        return value
    return str(value)


def stage(rows: Iterable[Row]) -> int:
    """Create the staging table and fill it from ``rows``; returns how many were staged."""
    vendor = _vendor()
    with connection.cursor() as cursor:
        # ON COMMIT DROP does not fire when the sync runs inside an outer transaction.
        cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
        cursor.execute(_STAGING_DDL[vendor])
        if vendor == "postgresql":
            # One COPY fed by a stream: PostgreSQL parses while Python reads the next rows.
            copy_stream = _CopyStream(rows)
            try:
                cursor.cursor.copy_expert(
                    f"COPY {STAGING} ({', '.join(ROW_FIELDS)}) FROM STDIN WITH (FORMAT csv)",
                    copy_stream,
                    size=1 << 16,
                )
            except Exception:
                # psycopg2 reports a failing read() as a cancelled COPY; surface the real cause.
                if copy_stream.error is not None:
                    raise copy_stream.error from None
                raise
            staged = copy_stream.rows
        else:
            staged = 0
            placeholders = ", ".join(["%s"] * len(ROW_FIELDS))
            for batch in _batches(rows, BATCH_ROWS):
                cursor.executemany(
                    f"INSERT INTO {STAGING} ({', '.join(ROW_FIELDS)}) VALUES ({placeholders})",
                    [tuple(_sqlite_value(v) for v in row) for row in batch],
                )
                staged += len(batch)
        cursor.execute(f"CREATE INDEX {STAGING}_key ON {STAGING} (instrument_token)")
        cursor.execute(f"CREATE INDEX {STAGING}_ukey ON {STAGING} (instrument_key)")
        cursor.execute(f"CREATE INDEX {STAGING}_match ON {STAGING} (match_id)")
        if vendor == "postgresql":
            cursor.execute(f"ANALYZE {STAGING}")
    return staged


class _CopyStream:
    """A file-like view of rows as COPY's CSV; holds one chunk at a time."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._rows = iter(rows)
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self.rows = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> str:
        try:
            return self._read(size)
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self, size: int) -> str:
        buffer, writer = self._buffer, self._writer
        buffer.seek(0)
        buffer.truncate()
        for row in self._rows:
            # Empty unquoted fields are NULL in COPY's CSV format.
            writer.writerow(["" if v is None else v for v in row])
            self.rows += 1
            if buffer.tell() >= size > 0:
                break
        return buffer.getvalue()

    def readline(self, size: int = -1) -> str:
        return self.read(size)


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def staged_scope() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT exchange FROM {STAGING} ORDER BY exchange")
        return [r[0] for r in cursor.fetchall()]


def listed_count(*, source: str, scope: list[str]) -> int:
    if not scope:
        return 0
    marks = ", ".join(["%s"] * len(scope))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM instruments WHERE source = %s AND is_listed AND exchange IN ({marks})",
            [source, *scope],
        )
        return cursor.fetchone()[0]


def breakdown(*, source: str, scope: list[str]) -> dict[str, dict[str, int]]:
    """Listed rows by ``exchange/segment`` in scope: {"NFO/NFO-OPT": {"listed": n, "active": m}}."""
    if not scope:
        return {}
    marks = ", ".join(["%s"] * len(scope))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT exchange, segment, COUNT(*), SUM(CASE WHEN is_active THEN 1 ELSE 0 END)
                FROM instruments WHERE source = %s AND is_listed AND exchange IN ({marks})
                GROUP BY exchange, segment ORDER BY exchange, segment""",
            [source, *scope],
        )
        return {f"{e}/{s}": {"listed": n, "active": int(a or 0)} for e, s, n, a in cursor.fetchall()}


def apply(*, source: str, scope: list[str], now: datetime) -> Counts:
    """Match the staged rows to the master and write the difference."""
    counts = Counts()
    stamp = connection.ops.adapt_datetimefield_value(now)
    key = _key_column(source)
    # The source is one of a fixed set: inlined as a literal, the partial unique indexes
    # (source = 'kite' AND is_listed) are usable by SQLite's planner too.
    assert source in ("kite", "upstox")
    source_literal = f"'{source}'"
    marks = ", ".join(["%s"] * len(scope))
    with connection.cursor() as cursor:
        # 1. Same key and same contract among listed rows; note whether it changed.
        changed = " OR ".join(f"NOT ({_same('i.' + c, _coalesced(c, STAGING))})" for c in COMPARED)
        cursor.execute(
            f"""UPDATE {STAGING} SET match_id = i.id, was_listed = TRUE,
                       changed = CASE WHEN {changed} THEN TRUE ELSE FALSE END
                FROM instruments i
                WHERE i.source = {source_literal} AND i.is_listed AND i.{key} = {STAGING}.{key}
                  AND {_contract_equal("i", STAGING)}""",
        )
        # 2. Same contract, any listing state, not matched yet; the n-th unmatched row of
        #    a contract in the dump takes the n-th best existing row of that contract.
        #    Both sides go to small indexed temporary tables first: only contracts still
        #    unmatched are looked at, so the join stays linear however much delisted
        #    history the table holds (SQLite cannot index a subquery).
        partition = ", ".join(CONTRACT)
        matched_ids = f"SELECT match_id FROM {STAGING} WHERE match_id IS NOT NULL"
        unmatched, candidates = f"{STAGING}_unmatched", f"{STAGING}_candidates"
        for table in (unmatched, candidates):
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(
            f"""CREATE TEMPORARY TABLE {unmatched} AS
                SELECT line, {partition}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY line) AS rn
                FROM {STAGING} WHERE match_id IS NULL"""
        )
        cursor.execute(f"CREATE INDEX {unmatched}_contract ON {unmatched} (exchange, tradingsymbol)")
        cursor.execute(
            f"""CREATE TEMPORARY TABLE {candidates} AS
                SELECT i.id, i.is_listed, {", ".join("i." + c for c in CONTRACT)},
                       ROW_NUMBER() OVER (
                           PARTITION BY {", ".join("i." + c for c in CONTRACT)}
                           ORDER BY i.is_listed DESC, i.last_seen_at DESC, i.id DESC
                       ) AS rn
                FROM instruments i
                WHERE i.source = {source_literal} AND i.exchange IN ({marks})
                  AND EXISTS (SELECT 1 FROM {unmatched} u WHERE {_contract_equal("u", "i")})
                  AND i.id NOT IN ({matched_ids})""",
            scope,
        )
        cursor.execute(f"CREATE INDEX {candidates}_contract ON {candidates} (exchange, tradingsymbol)")
        cursor.execute(
            f"""UPDATE {STAGING} SET match_id = m.id, was_listed = m.is_listed
                FROM (
                    SELECT u.line, c.id, c.is_listed FROM {unmatched} u
                    JOIN {candidates} c ON {_contract_equal("u", "c")} AND u.rn = c.rn
                ) m
                WHERE {STAGING}.line = m.line"""
        )
        for table in (unmatched, candidates):
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(
            f"""UPDATE {STAGING} SET changed = CASE WHEN {changed} THEN TRUE ELSE FALSE END
                FROM instruments i WHERE i.id = {STAGING}.match_id AND {STAGING}.changed IS NULL""",
        )

        if source == "kite":
            counts.moved_tokens |= _tokens_changing_owner(cursor)

        # 3. Delist: listed rows in scope that nothing matched, then listed rows anywhere
        #    whose key the dump gives to another contract.
        for condition, params in (
            (f"exchange IN ({marks})", scope),
            (f"{key} IN (SELECT {key} FROM {STAGING})", []),
        ):
            where = f"source = {source_literal} AND is_listed AND {condition} AND id NOT IN ({matched_ids})"
            cursor.execute(f"SELECT instrument_token, is_active FROM instruments WHERE {where}", params)
            leaving = cursor.fetchall()
            delisted = len(leaving)
            counts.delisted += delisted
            counts.deactivated += sum(1 for _, active in leaving if active)
            if source == "kite":  # their tokens lose their listed owner
                counts.moved_tokens.update(token for token, _ in leaving if token is not None)
            if delisted:
                cursor.execute(
                    f"UPDATE instruments SET is_listed = FALSE, is_active = FALSE, delisted_at = %s, updated_at = %s "
                    f"WHERE {where}",
                    [stamp, stamp, *params],
                )

        # 4. Update matched rows: updated (a compared column moved), relisted (was
        #    delisted), unchanged.
        cursor.execute(
            f"""SELECT COALESCE(SUM(CASE WHEN was_listed AND changed THEN 1 ELSE 0 END), 0),
                       COALESCE(SUM(CASE WHEN was_listed THEN 0 ELSE 1 END), 0),
                       COUNT(*)
                FROM {STAGING} WHERE match_id IS NOT NULL""",
        )
        updated, relisted, matched = (int(v) for v in cursor.fetchone())
        counts.updated, counts.relisted = updated, relisted
        counts.unchanged = matched - updated - relisted
        # Keys that move between rows would collide mid-statement: park them first.
        parked = "-id" if key == "instrument_token" else "'~' || CAST(id AS varchar(20))"
        cursor.execute(
            f"""UPDATE instruments SET {key} = {parked}
                WHERE id IN (SELECT s.match_id FROM {STAGING} s JOIN instruments i ON i.id = s.match_id
                             WHERE NOT ({_same("i." + key, "s." + key)}))""",
        )
        assignments = ", ".join(f"{c} = {_coalesced(c, STAGING)}" for c in (*COMPARED, "last_price"))
        cursor.execute(
            f"""UPDATE instruments SET {assignments},
                    is_listed = TRUE, delisted_at = NULL, last_seen_at = %s,
                    updated_at = CASE WHEN {STAGING}.changed OR NOT {STAGING}.was_listed
                                      THEN %s ELSE instruments.updated_at END
                FROM {STAGING} WHERE instruments.id = {STAGING}.match_id""",
            [stamp, stamp],
        )

        # 5. Insert the rest.
        columns = [c for c in ROW_FIELDS if c != "line"]
        values = ", ".join(_coalesced(c) for c in columns)
        cursor.execute(
            f"""INSERT INTO instruments (source, {", ".join(columns)}, is_active, stream_mode, is_listed,
                                         first_seen_at, last_seen_at, updated_at)
                SELECT %s, {values}, FALSE, 'quote', TRUE, %s, %s, %s
                FROM {STAGING} s WHERE s.match_id IS NULL ORDER BY s.line""",
            [source, stamp, stamp, stamp],
        )
        counts.inserted = cursor.rowcount
        cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
    return counts


def _tokens_changing_owner(cursor: Any) -> set[int]:
    """Tokens of the staged Kite rows whose listed owner after the sync is not the row that
    held them listed before, and the old tokens of listed rows whose token changes.
    (Tokens of rows about to be delisted are added by the caller.)"""
    cursor.execute(
        f"""SELECT s.instrument_token, m.instrument_token, m.is_listed
            FROM {STAGING} s JOIN instruments m ON m.id = s.match_id
            WHERE NOT (m.is_listed AND {_same("m.instrument_token", "s.instrument_token")})"""
    )
    moved: set[int] = set()
    for new_token, old_token, was_listed in cursor.fetchall():
        moved.add(new_token)
        if was_listed and old_token is not None:
            moved.add(old_token)
    # A new contract under a token some row already had (listed or not).
    cursor.execute(
        f"""SELECT DISTINCT s.instrument_token FROM {STAGING} s JOIN instruments o
                ON o.instrument_token = s.instrument_token AND o.source = 'kite'
            WHERE s.match_id IS NULL"""
    )
    moved.update(token for (token,) in cursor.fetchall())
    return moved


def _coalesced(column: str, alias: str = "s") -> str:
    if column in ("name", "instrument_key"):
        return f"COALESCE({alias}.{column}, '')"
    if column in ("last_price", "strike", "tick_size", "lot_size"):
        return f"COALESCE({alias}.{column}, 0)"
    return f"{alias}.{column}"
