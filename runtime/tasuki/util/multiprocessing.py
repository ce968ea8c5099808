"""`from tasuki.util.multiprocessing import Pool`: the Pool drop-in under Ray's module path."""
from ..pool import AsyncResult, Pool, TimeoutError

__all__ = ["Pool", "AsyncResult", "TimeoutError"]
