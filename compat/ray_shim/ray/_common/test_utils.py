"""ray._common.test_utils: the same stand-ins as ray._private.test_utils (Ray moved them here)."""
from .._private.test_utils import *  # noqa: F401,F403
from .._private.test_utils import __getattr__  # noqa: F401
