"""PostgreSQL advisory locks: one machine at a time through a step that must not race.

Machines started at the same moment on an empty database all try to create the same tables
(Optuna's storage, MLflow's tracking store: both run Alembic migrations), and all but one fail
on a unique key. ``database_lock`` serialises such a step across every process that reaches the
database. It sits below both rooms that need it (``bench.tracking``, ``bench.workqueue``) and
imports neither; SQLAlchemy is loaded only when a PostgreSQL URL asks for a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

__all__ = ["database_lock"]


@contextlib.contextmanager
def database_lock(url: str, purpose: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock named by ``purpose`` for the block; a no-op for other URLs.

    PostgreSQL scopes advisory locks to one database, so the key is the purpose alone: machines
    that spell the URL differently (another host alias, the password in the URL or in
    ``PGPASSWORD``, another user) still take the same lock. The lock lives on a connection of its
    own, held until the block ends (or the process dies: PostgreSQL then releases it).
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"bench:{purpose}".encode()).digest()[:7], "big")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
