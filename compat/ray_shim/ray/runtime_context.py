"""ray.runtime_context → tasuki's RuntimeContext and get_runtime_context."""
from tasuki.api import RuntimeContext, get_runtime_context  # noqa: F401
