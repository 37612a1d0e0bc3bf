"""Rows read into frozen dataclasses by column name, never by position: a column added to a
query or a field to a record cannot shift every value after it."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Label, Row

R = TypeVar("R")


def columns_of(record: type[Any], **columns: ColumnElement[Any]) -> list[Label[Any]]:
    """The select list that fills `record`: one column per field, labelled with its name."""
    fields = {field.name for field in dataclasses.fields(record)}
    if fields != set(columns):
        raise TypeError(f"{record.__name__} takes {sorted(fields)}, given {sorted(columns)}")
    return [column.label(name) for name, column in columns.items()]


def record_of(record: type[R], row: Row[Any], **converted: Any) -> R:
    """One row of a `columns_of` select as `record`; `converted` replaces values that need
    a type of their own (an enum from its text)."""
    return record(**{**row._mapping, **converted})
