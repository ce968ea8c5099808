"""Stand-in for ray.tests.client_test_utils: the one helper public-API tests take from it."""
from .._private.test_utils import SignalActor


def create_remote_signal_actor(ray):
    """The remote SignalActor class (Ray builds it with the `ray` module it is given; ours is tasuki's)."""
    return SignalActor
