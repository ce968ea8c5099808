"""tasuki_operator.leader: the pure decision (a table of Leases as read), then LeaderElectors against
the Kubernetes API emulation (tests/kube_emulator.py) over real HTTP: one of two replicas leads; a
released Lease passes at once; a leader cut off from the API (its requests failing or hanging) stops
leading before the other takes over; a write from a stale read loses cleanly; every request is
allowed by rbac.yaml. Waits are on conditions with short lease terms, never fixed sleeps.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

for _needed in ("aiohttp", "kmock", "yaml", "kubernetes"):   # the test extra
    pytest.importorskip(_needed)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_emulator import KubeEmulator  # noqa: E402

from tasuki_operator import rbac  # noqa: E402
from tasuki_operator.kube import Kube, KubeConflict, KubeForbidden, KubeUnreachable  # noqa: E402
from tasuki_operator.leader import (ACQUIRE, RENEW, TAKE_OVER, WAIT, LeaderElector, decide, lease_body,  # noqa: E402
                                    micro_time, parse_micro_time)

NS = "tasuki-system"
NAME = rbac.LEADER_LEASE
NOW = 1_796_227_664.123456            # 2026-12-02T16:07:44.123456Z
LEASE = "coordination.k8s.io/v1/leases"


# --- MicroTime ------------------------------------------------------------------------------------
def test_micro_time_is_what_the_lease_api_reads():
    assert micro_time(NOW) == "2026-12-02T16:07:44.123456Z"
    assert micro_time(1_796_227_664.0) == "2026-12-02T16:07:44.000001Z"     # never a zero fraction
    assert parse_micro_time("2026-12-02T16:07:44.123456Z") == pytest.approx(NOW, abs=1e-6)
    assert parse_micro_time("2026-12-02T16:07:44.123456+00:00") == pytest.approx(NOW, abs=1e-6)
    assert parse_micro_time("2026-12-02T16:07:44Z") == 1_796_227_664.0
    with pytest.raises(ValueError, match="'yesterday' is not an RFC 3339 time"):
        parse_micro_time("yesterday")


# --- decide: one table ------------------------------------------------------------------------------
def lease(holder: str | None, renewed_ago: float | None, duration: int | None = 15, transitions: int = 2,
          renew_time: str | None = None) -> dict:
    """A Lease as the API returns it, renewed `renewed_ago` seconds before NOW (None: no times)."""
    spec: dict = {"leaseTransitions": transitions}
    if holder is not None:
        spec["holderIdentity"] = holder
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    if renewed_ago is not None:
        spec["acquireTime"] = micro_time(NOW - 100)
        spec["renewTime"] = micro_time(NOW - renewed_ago)
    if renew_time is not None:
        spec["renewTime"] = renew_time
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NS, "uid": "u-1", "resourceVersion": "41"}, "spec": spec}


DECIDE_CASES = [
    # id, lease as read, action, holder, seconds left, words in the reason, leaseTransitions written
    ("none", None, ACQUIRE, "", 0.0, ["no Lease", "me creates it"], 0),
    ("mine-fresh", lease("me", 5), RENEW, "me", 10.0, ["me holds the Lease (10.0 s left)"], 2),
    ("mine-expired", lease("me", 40), RENEW, "me", 0.0, ["me holds the Lease (0.0 s left)"], 2),
    ("other-fresh", lease("other", 5), WAIT, "other", 10.0, ["other holds the Lease for 10.0 s more", "me waits"],
     None),
    ("other-own-term", lease("other", 20, duration=60), WAIT, "other", 40.0, ["for 40.0 s more", "for 60 s"], None),
    ("other-no-duration", lease("other", 5, duration=None), WAIT, "other", 10.0, ["10.0 s more"], None),
    ("other-expired", lease("other", 20), TAKE_OVER, "other", 0.0, ["other's Lease expired 5.0 s ago",
                                                                     "me takes it over"], 3),
    ("other-just-expired", lease("other", 15.001), TAKE_OVER, "other", 0.0, ["expired 0.0 s ago"], 3),
    ("released", lease("", 0, duration=1), TAKE_OVER, "", 0.0, ["the Lease is free"], 3),
    ("no-holder", lease(None, 0), TAKE_OVER, "", 0.0, ["the Lease is free"], 3),
    ("other-never-renewed", lease("other", None), TAKE_OVER, "other", 0.0, ["renewed never"], 3),
    ("other-unreadable-time", lease("other", None, renew_time="soon"), TAKE_OVER, "other", 0.0,
     ["unreadable time", "'soon'"], 3),
]


@pytest.mark.parametrize("read, action, holder, left, words, transitions", [c[1:] for c in DECIDE_CASES],
                         ids=[c[0] for c in DECIDE_CASES])
def test_decide(read, action, holder, left, words, transitions):
    d = decide(read, "me", NOW, 15)
    assert (d.action, d.holder) == (action, holder)
    assert d.seconds_left == pytest.approx(left, abs=1e-3)
    for word in words:
        assert word in d.reason, d.reason
    if action == WAIT:
        assert d.lease is None
        return
    spec = d.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["leaseDurationSeconds"] == 15
    assert spec["renewTime"] == "2026-12-02T16:07:44.123456Z"
    assert spec["leaseTransitions"] == transitions
    if action == RENEW:                                  # the term goes on: acquired when it was
        assert spec["acquireTime"] == read["spec"]["acquireTime"]
    else:                                                # a new term starts now
        assert spec["acquireTime"] == spec["renewTime"]
    if read is None:
        assert d.lease["metadata"] == {"name": NAME}
    else:                                                # the write is conditional on the version read
        assert d.lease["metadata"] == read["metadata"]
    assert d.lease["apiVersion"] == "coordination.k8s.io/v1" and d.lease["kind"] == "Lease"


def test_decide_needs_an_identity():
    with pytest.raises(ValueError, match="identity"):
        decide(None, "", NOW, 15)


def test_lease_body_of_a_release():
    body = lease_body(NAME, "", NOW, 1, acquire_time="2026-12-02T16:00:00.000001Z", transitions=4,
                      previous=lease("me", 3))
    assert body["spec"] == {"holderIdentity": "", "leaseDurationSeconds": 1,
                            "acquireTime": "2026-12-02T16:00:00.000001Z",
                            "renewTime": "2026-12-02T16:07:44.123456Z", "leaseTransitions": 4}
    assert body["metadata"]["resourceVersion"] == "41"


@pytest.mark.parametrize("kwargs, needle", [
    ({"identity": ""}, "identity must be"),
    ({"duration_s": 0}, "duration_s must be a whole number"),
    ({"duration_s": 2.5}, "duration_s must be a whole number"),
    ({"renew_every_s": 15}, "renew_every_s must be above 0 and below duration_s=15"),
    ({"renew_every_s": 0}, "renew_every_s must be above 0"),
])
def test_elector_refuses_bad_settings(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        LeaderElector(object(), NS, **{"identity": "me", **kwargs})


# --- electors against the emulator ----------------------------------------------------------------
@pytest.fixture()
def emulator():
    with KubeEmulator() as kube:
        yield kube


@pytest.fixture()
def electors(emulator):
    """Make LeaderElectors on the emulator (each with its own client); all are released at the end."""
    made: list[LeaderElector] = []

    def make(identity: str, kube=None, **kwargs) -> LeaderElector:
        kwargs = {"duration_s": 3, "renew_every_s": 0.5, **kwargs}
        elector = LeaderElector(kube or Kube.from_kubeconfig(emulator.kubeconfig_path, timeout=5), NS, identity,
                                **kwargs)
        made.append(elector)
        return elector
    yield make
    for elector in made:
        elector.release()


def stored(emulator) -> dict:
    return emulator.get(LEASE, NAME, NS)["spec"]


def test_of_two_electors_only_one_leads(emulator, electors):
    a, b = electors("a", duration_s=2), electors("b", duration_s=2)
    assert a.acquire(timeout=10) is True and a.is_leader
    # b waits more than two of a's terms: a's renewals keep the Lease, so b never leads.
    assert b.acquire(timeout=2 * a.duration_s + 1) is False
    assert a.is_leader and not b.is_leader and not a.lost.is_set() and not b.lost.is_set()
    assert b.last_decision.action == WAIT and "a holds the Lease" in b.last_decision.reason
    spec = stored(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"], spec["leaseDurationSeconds"]) == ("a", 0, 2)
    assert parse_micro_time(spec["renewTime"]) > parse_micro_time(spec["acquireTime"])     # renewed since


def test_a_released_lease_passes_to_the_other_at_once(emulator, electors):
    a, b = electors("a", duration_s=30), electors("b", duration_s=30)
    assert a.acquire(timeout=10)
    assert b.acquire(timeout=0.5) is False                  # b campaigns, a holds a 30 s term
    started = time.monotonic()
    assert a.release() is True
    assert not a.is_leader and not a.lost.is_set()          # a clean stop is not a loss
    assert b.acquire(timeout=10) is True
    assert time.monotonic() - started < 10                  # long before a's 30 s term would have ended
    spec = stored(emulator)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    assert a.release() is False                             # not a's any more: nothing to hand over


class CutOff:
    """A Kube whose requests fail (KubeUnreachable) or hang once `cut` is set: a partitioned replica."""

    def __init__(self, kube: Kube, hang: bool):
        self.kube, self.hang = kube, hang
        self.cut, self.healed = threading.Event(), threading.Event()

    def __getattr__(self, method: str):
        call = getattr(self.kube, method)

        def cut_off(*args, **kwargs):
            if self.cut.is_set():
                if self.hang:
                    self.healed.wait(60)
                raise KubeUnreachable(f"{method}: cut off by the test")
            return call(*args, **kwargs)
        return cut_off


@pytest.mark.parametrize("hang", [False, True], ids=["requests-fail", "requests-hang"])
def test_a_leader_cut_off_stops_leading_before_the_other_takes_over(emulator, electors, hang):
    cut = CutOff(Kube.from_kubeconfig(emulator.kubeconfig_path, timeout=5), hang)
    lost: list[tuple[str, float]] = []
    # a stops 2 s after its last renewal, b may take over 3 s after it: a 1 s margin
    a = electors("a", kube=cut, renew_every_s=1.0, on_lost=lambda reason: lost.append((reason, time.monotonic())))
    b = electors("b")
    try:
        assert a.acquire(timeout=10)
        assert b.acquire(timeout=0.5) is False
        cut.cut.set()
        assert b.acquire(timeout=15) is True                # after a's term (3 s) ran out
        taken_over = time.monotonic()
        assert a.lost.is_set() and not a.is_leader          # a had stopped already
        assert len(lost) == 1 and lost[0][1] < taken_over
        assert lost[0][0] == a.lost_reason and "no renewal of the Lease for 2 s" in a.lost_reason
        spec = stored(emulator)
        assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
        assert a.acquire(timeout=0.1) is False              # losing is final
    finally:
        cut.healed.set()


def test_a_leader_that_finds_another_holder_stops_at_once(emulator, electors):
    a = electors("a", duration_s=30)
    assert a.acquire(timeout=10)
    emulator.patch(LEASE, NAME, {"spec": {"holderIdentity": "intruder", "renewTime": micro_time(time.time())}}, NS)
    assert a.lost.wait(10)
    assert "another replica holds the Lease: intruder holds the Lease" in a.lost_reason
    assert not a.is_leader


class Interleaved:
    """A Kube that runs `between()` right after each get_lease: another replica writes in between."""

    def __init__(self, kube: Kube, between):
        self.kube, self.between = kube, between

    def get_lease(self, ns: str, name: str):
        read = self.kube.get_lease(ns, name)
        self.between()
        return read

    def __getattr__(self, method: str):
        return getattr(self.kube, method)


@pytest.mark.parametrize("before", ["absent", "expired"])
def test_a_write_from_a_stale_read_loses_cleanly(emulator, electors, before):
    if before == "expired":
        emulator.create(lease_body(NAME, "gone", time.time() - 60, 15), NS)
        rival = {"spec": {"holderIdentity": "b", "renewTime": micro_time(time.time())}}
        between = lambda: emulator.patch(LEASE, NAME, rival, NS)        # noqa: E731
    else:
        between = lambda: emulator.create(lease_body(NAME, "b", time.time(), 15), NS)  # noqa: E731
    kube = Kube.from_kubeconfig(emulator.kubeconfig_path, timeout=5)
    a = electors("a", kube=Interleaved(kube, between))
    assert a.try_lead() is False                             # a KubeConflict, handled: no exception
    assert a.last_decision.action == (ACQUIRE if before == "absent" else TAKE_OVER)
    assert not a.is_leader and not a.lost.is_set()
    assert stored(emulator)["holderIdentity"] == "b"
    a.kube = kube                                            # the next round reads b's fresh Lease and waits
    assert a.try_lead() is False and a.last_decision.action == WAIT


def test_a_missing_permission_ends_the_campaign_with_the_rbac_message():
    class Forbidden:
        def get_lease(self, ns, name):
            raise KubeForbidden(f'forbidden: the operator may not get leases.coordination.k8s.io "{name}"',
                                status=403, verb="get", resource="leases.coordination.k8s.io", namespace=ns,
                                name=name)
    lost: list[str] = []
    a = LeaderElector(Forbidden(), NS, "a", on_lost=lost.append)
    with pytest.raises(KubeForbidden, match="may not get leases"):
        a.acquire(timeout=10)
    assert a.lost.is_set() and lost == [a.lost_reason] and "KubeForbidden" in a.lost_reason


# --- the Kube calls and RBAC --------------------------------------------------------------------------
def test_lease_calls_report_a_conflict_distinctly(emulator):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    assert k.get_lease(NS, NAME) is None
    created = k.create_lease(NS, lease_body(NAME, "a", time.time(), 15))
    assert created["metadata"]["resourceVersion"] and k.get_lease(NS, NAME)["spec"]["holderIdentity"] == "a"
    with pytest.raises(KubeConflict) as err:
        k.create_lease(NS, lease_body(NAME, "b", time.time(), 15))
    assert (err.value.status, err.value.verb, err.value.name) == (409, "create", NAME)
    assert "another writer was first" in str(err.value) and "already exists" in str(err.value)
    renewed = k.replace_lease(NS, NAME, lease_body(NAME, "a", time.time(), 15, previous=created))
    with pytest.raises(KubeConflict) as err:                 # created's resourceVersion is stale now
        k.replace_lease(NS, NAME, lease_body(NAME, "b", time.time(), 15, previous=created))
    assert (err.value.status, err.value.verb, err.value.namespace) == (409, "update", NS)
    assert "has been modified" in str(err.value)
    assert k.get_lease(NS, NAME)["metadata"]["resourceVersion"] == renewed["metadata"]["resourceVersion"]
    with pytest.raises(ValueError, match="needs metadata.resourceVersion"):
        k.replace_lease(NS, NAME, lease_body(NAME, "b", time.time(), 15))


def test_every_request_of_leader_election_is_allowed_by_rbac_yaml(emulator, electors):
    a, b = electors("a"), electors("b")
    assert a.acquire(timeout=10)
    assert b.acquire(timeout=1.5) is False                   # reads, and a renews at least twice
    assert a.release() and b.acquire(timeout=10)             # a releases (update), b takes over (update)
    audit = emulator.audit
    seen = {(x["verb"], x["apiGroup"], x["resource"], x["subresource"], x["name"]) for x in audit}
    assert seen == {("get", "coordination.k8s.io", "leases", None, NAME),
                    ("create", "coordination.k8s.io", "leases", None, None),
                    ("update", "coordination.k8s.io", "leases", None, NAME)}
    rules = rbac.load_rules()
    assert [x for x in audit if not rbac.allows(rules, x["verb"], x["apiGroup"], x["resource"], x["subresource"],
                                                x["name"])] == []
    assert not rbac.allows(rules, "get", "coordination.k8s.io", "leases", None, "another-lease")
