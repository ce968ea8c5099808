"""Stand-in for the setproctitle package, which Ray bundles and so Ray's tests import directly
(test_actor.py). tasuki does not set process titles: getproctitle() reads the process's command
line, so a test that expects Ray's `ray::<task>` title fails on that assertion, not at import."""


def getproctitle() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


def setproctitle(title: str) -> None:
    raise NotImplementedError("the compat shim's setproctitle stand-in cannot change the process title")
