"""Persistence: the only package that talks SQL. See :class:`bot.store.db.Database`."""

from bot.store.db import Database, DatabaseUnavailable

__all__ = ["Database", "DatabaseUnavailable"]
