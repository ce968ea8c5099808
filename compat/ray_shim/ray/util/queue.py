"""ray.util.queue → tasuki.util.queue."""
from tasuki.util.queue import *  # noqa: F401,F403
from tasuki.util.queue import Empty, Full, Queue  # noqa: F401
