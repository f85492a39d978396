"""The work queue: units of work (a search's trials, a suite's row x seed pairs) handed out to
worker processes on one machine or many, through an Optuna storage.

``storage``: which backend, locks, heartbeats, dead workers; ``trials``: claim and run one
trial; ``pairs``: a suite's pairs. This room and ``bench.search`` are the only ones that
import optuna; nothing here imports suite or search code.
"""

from .pairs import IN_PROCESS, Claim, PairQueue, QueueError
from .storage import STORAGE_ENV, is_database, open_storage

__all__ = ["IN_PROCESS", "STORAGE_ENV", "Claim", "PairQueue", "QueueError", "is_database", "open_storage"]
