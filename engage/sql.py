"""Statements built once per shape and executed with parameters: the hot paths write a few rows per message."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel


def insert_returning_ids(session: Session, table_name: str, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows (all with the same keys) in one executemany; return their new ids, in the order of ``rows``.

    Core, not the ORM's bulk INSERT: that one splits the rows wherever the set of NULL values changes (a step with a
    due time, then three without) and splices the results of hundreds of small INSERTs, in quadratic time.
    """
    table = SQLModel.metadata.tables[table_name]
    result = session.connection().execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [int(row_id) for row_id in result.scalars()]


_ROW_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}


def update_row(session: Session, table_name: str, row_id: int, values: dict[str, Any], **only_if: Any) -> bool:
    """UPDATE one row by id (and ``only_if`` column values) with a statement built once per shape; True if it matched.

    A statement built for each row costs several times what executing it does: the runner writes a few rows for every
    email, so the statements of each shape are built once and executed with parameters.
    """
    key = (table_name, tuple(values), tuple(only_if))
    statement = _ROW_UPDATES.get(key)
    if statement is None:
        table = SQLModel.metadata.tables[table_name]
        conditions = [table.c.id == bindparam("where_id")]
        conditions += [table.c[name] == bindparam(f"where_{name}") for name in only_if]
        statement = update(table).where(*conditions).values({name: bindparam(f"set_{name}") for name in values})
        _ROW_UPDATES[key] = statement
    params = {"where_id": row_id}
    params.update({f"where_{name}": value for name, value in only_if.items()})
    params.update({f"set_{name}": value for name, value in values.items()})
    result: Any = session.connection().execute(statement, params)
    return bool(result.rowcount)


def write_row(session: Session, row: SQLModel, values: dict[str, Any], **only_if: Any) -> bool:
    """`update_row` for a loaded object, which then holds the values written, as committed (nothing left to flush)."""
    table_name = str(getattr(type(row), "__tablename__"))  # noqa: B009 (SQLModel declares it, mypy cannot see it)
    written = update_row(session, table_name, row.id, values, **only_if)  # type: ignore[attr-defined]
    if written:
        for name, value in values.items():
            set_committed_value(row, name, value)
    return written
