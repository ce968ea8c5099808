"""ray.util.actor_pool → tasuki.util.actor_pool."""
from tasuki.util.actor_pool import *  # noqa: F401,F403
from tasuki.util.actor_pool import ActorPool  # noqa: F401
