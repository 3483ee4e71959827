"""Where the two stores live: SQLite URLs for the Optuna study and the MLflow tracking store.

One parser and one builder serve both, so a relative ``sqlite:///rel.db`` means the same file to
the workers' locks, the tracker and the server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .files import exclusive_lock

OPTUNA_DB, MLFLOW_DB = "optuna.db", "mlflow.db"
# The advisory-lock key for creating a PostgreSQL store's tables (advisory keys are per database).
_SETUP_LOCK_KEY = 0x6D62722D73657475  # "mbr-setu"


def sqlite_url(path: str | Path) -> str:
    """The absolute ``sqlite:///`` URL of a database file."""
    return f"sqlite:///{Path(path).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URL (absolute), or None for other stores and in-memory SQLite."""
    if not url.startswith("sqlite:"):
        return None
    # sqlite:///rel.db is relative, sqlite:////abs.db absolute; urlsplit keeps the leading "/" of both
    # and leaves out the query (?timeout=...).
    path = unquote(urlsplit(url).path)
    if path.startswith("/"):
        path = path[1:]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def default_storage_url(workdir: str | Path) -> str:
    """The embedded Optuna storage: ``optuna.db`` in `workdir`."""
    return sqlite_url(Path(workdir) / OPTUNA_DB)


def default_tracking_uri(workdir: str | Path) -> str:
    """The embedded MLflow store: ``mlflow.db`` in `workdir`."""
    return sqlite_url(Path(workdir) / MLFLOW_DB)


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go to ``mlartifacts/`` beside the database file.

    Other stores (a tracking server, PostgreSQL) return None: the server decides where artifacts go.
    """
    db = sqlite_path(tracking_uri)
    return None if db is None else str(db.parent / "mlartifacts")


# scheme://user:password@host: the password runs up to the last "@" before the host, so that a
# password holding "@" or ":" is hidden whole.
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^\s]*@(?=[^@\s/]*(?:[/?#\s]|$))")


# Passwords in the examples of our own messages ("postgresql://user:password@host/db") stay readable.
_PLACEHOLDERS = {"password", "pass", "<password>"}


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ``***``: the one helper for messages and logs."""
    def hide(match: re.Match) -> str:
        secret = match[0][len(match["head"]):-1]
        return match[0] if secret.lower() in _PLACEHOLDERS else f"{match['head']}***@"

    return _CREDENTIALS.sub(hide, text)


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """Hold while a store's tables are created or migrated, so workers that start together wait for the first.

    A file lock beside a SQLite file (one machine); a PostgreSQL session advisory lock (any number of
    machines; the server drops it if the holder dies). Other databases: no lock.
    """
    database = sqlite_path(url)
    if database is not None:
        with exclusive_lock(database.with_name(database.name + ".lock")):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SETUP_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()
