"""Where the two stores live: SQLite URLs for the Optuna study and the MLflow tracking store.

One parser and one builder serve both, so a relative ``sqlite:///rel.db`` means the same file to
the workers' locks, the tracker and the server.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

OPTUNA_DB, MLFLOW_DB = "optuna.db", "mlflow.db"


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


def redact(uri: str) -> str:
    """`uri` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if not password:
        return uri
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
