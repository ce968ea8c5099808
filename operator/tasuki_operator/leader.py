"""Leader election through a coordination.k8s.io/v1 Lease, so that several replicas of the operator
can run and only one acts.

Owns the Lease `tasuki-operator` (rbac.LEADER_LEASE) in the operator's namespace. The operator's
command calls it before it starts kopf (standalone mode); nothing else here talks to kopf.

Two parts:
- `decide(lease, identity, now, duration_s)`, pure (no I/O, no clock): given the Lease as read
  (or None), what this replica does now, why, and the Lease to write:
      no Lease                          → ACQUIRE    create it, holding it
      we hold it                        → RENEW      renewTime = now
      free (released: no holder)        → TAKE_OVER  leaseTransitions + 1
      another holds it, expired         → TAKE_OVER  leaseTransitions + 1
      another holds it, not expired     → WAIT       the holder and the seconds left in the reason
  A Lease expires leaseDurationSeconds after its renewTime, so the replicas' clocks must agree to
  well within the duration (NTP does). Times are the API's MicroTime: "2026-12-02T16:07:44.123456Z".
- `LeaderElector`, the I/O: a background thread reads the Lease, decides and writes it through
  kube.py (every write conditional on the resourceVersion read, so of two replicas that decide at
  once, one write wins and the other gets KubeConflict and waits). A second thread, the watchdog,
  ends the leadership when renewals have failed for `duration_s - renew_every_s` seconds, even
  while a request hangs: one renewal interval before any other replica may take the Lease over.

How the operator uses it (kopf runs in the main thread, on asyncio; the elector's threads call the
synchronous kube.py, and `on_lost` hands the news to kopf's loop):

    async def main() -> int:
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        elector = LeaderElector(kube, namespace, identity=f"{hostname}_{uuid4().hex[:8]}",
                                on_lost=lambda reason: loop.call_soon_threadsafe(stop.set))
        try:
            if await asyncio.to_thread(elector.acquire):       # until this replica leads
                await kopf.operator(standalone=True, stop_flag=stop, ...)
        finally:
            await asyncio.to_thread(elector.release)           # the next replica takes over at once
        return 1 if elector.lost.is_set() else 0               # sys.exit(asyncio.run(main()))

(Not `stop_flag=elector.lost`: kopf waits for a threading.Event in an executor thread, and
asyncio.run's exit waits for that thread, forever when the Event is never set.)

Losing the leadership is final for an elector: `lost` is set (and `on_lost` called) and it never
leads again. The operator must stop acting at once: kopf stops on its stop flag, the process exits
non-zero and Kubernetes restarts the container, which then waits its turn as a new candidate. The
identity should be unique per process (pod name plus a random suffix), so that a restarted
container never mistakes the Lease of its predecessor for its own.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import threading
import time
from typing import Callable

from .kube import Kube, KubeConflict, KubeError, KubeForbidden
from .rbac import LEADER_LEASE

__all__ = ["ACQUIRE", "RENEW", "TAKE_OVER", "WAIT", "Decision", "decide", "lease_body", "micro_time",
           "parse_micro_time", "LeaderElector", "LEASE_API_VERSION", "RELEASED_DURATION_S"]

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
ACQUIRE, RENEW, TAKE_OVER, WAIT = "acquire", "renew", "take over", "wait"
RELEASED_DURATION_S = 1          # leaseDurationSeconds of a released Lease (the API wants it positive)
RETRY_S = 1.0                    # after a failed round, the next one comes this soon (or renew_every_s if sooner)
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


# --- the decision (pure) ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with the Lease. `holder` is who holds it as read ("" when nobody), `seconds_left`
    how long until it expires as read (0 when expired, free or absent), `lease` what to write: create
    it for ACQUIRE, replace it for RENEW and TAKE_OVER, None for WAIT."""
    action: str
    reason: str
    holder: str
    seconds_left: float
    lease: dict | None


def micro_time(t: float) -> str:
    """Seconds since the epoch → the Lease API's MicroTime, "2026-12-02T16:07:44.123456Z" (UTC).

    A time on a whole second is written 1 µs later: the kubernetes client (37 here) turns the times
    of a dict body into datetimes and writes them back with isoformat(), which drops a zero
    fraction, and the API server reads a MicroTime only with all six digits (a 400 otherwise)."""
    when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return (when if when.microsecond else when.replace(microsecond=1)).strftime(MICRO_TIME)


def parse_micro_time(text: str) -> float:
    """A MicroTime (or a plain RFC 3339 time, with or without fractions) → seconds since the epoch.
    Raises ValueError naming the text."""
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(text, fmt).timestamp()
        except (TypeError, ValueError):
            continue
    raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-12-02T16:07:44.123456Z")


def lease_body(name: str, holder: str, now: float, duration_s: int, *, acquire_time: str | None = None,
               transitions: int = 0, previous: dict | None = None) -> dict:
    """The Lease `name` held by `holder` (or released: holder ""), renewed at `now`, for `duration_s`
    seconds, acquired at `acquire_time` (default: now), after `transitions` changes of holder.

    With `previous` (the Lease as read), its metadata is kept, resourceVersion included: a
    replace with this body succeeds only if nobody wrote the Lease since it was read."""
    metadata = dict(previous["metadata"]) if previous else {"name": name}
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": int(duration_s),
                     "acquireTime": acquire_time or micro_time(now), "renewTime": micro_time(now),
                     "leaseTransitions": int(transitions)}}


def decide(lease: dict | None, identity: str, now: float, duration_s: int, name: str = LEADER_LEASE) -> Decision:
    """What replica `identity` does at `now` (seconds since the epoch) with `lease` as read (None:
    there is none). Its own Lease would last `duration_s` seconds; another holder's lasts the
    leaseDurationSeconds that holder wrote."""
    if not identity:
        raise ValueError("decide: identity must be a non-empty string (the pod name and a random suffix)")
    if lease is None:
        return Decision(ACQUIRE, f'no Lease "{name}" yet: {identity} creates it and leads', "", 0.0,
                        lease_body(name, identity, now, duration_s))
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    transitions = int(spec.get("leaseTransitions") or 0)
    left, when = _seconds_left(spec, now, duration_s)
    if holder == identity:
        return Decision(RENEW, f"{identity} holds the Lease ({max(left, 0.0):.1f} s left): renewing", holder,
                        max(left, 0.0), lease_body(name, identity, now, duration_s,
                                                   acquire_time=spec.get("acquireTime"), transitions=transitions,
                                                   previous=lease))
    take_over = lease_body(name, identity, now, duration_s, transitions=transitions + 1, previous=lease)
    if not holder:
        return Decision(TAKE_OVER, f"the Lease is free (released {when}): {identity} takes it over", "", 0.0,
                        take_over)
    if left > 0:
        return Decision(WAIT, f"{holder} holds the Lease for {left:.1f} s more (renewed {when}): "
                        f"{identity} waits", holder, left, None)
    return Decision(TAKE_OVER, f"{holder}'s Lease expired {-left:.1f} s ago (renewed {when}): {identity} takes "
                    "it over", holder, 0.0, take_over)


def _seconds_left(spec: dict, now: float, duration_s: int) -> tuple[float, str]:
    """Seconds until the Lease expires (negative: expired that long ago) and when it was renewed, in
    words. A Lease without a readable renewTime or acquireTime counts as expired: nobody can show
    that it is alive, and taking it over writes a readable one."""
    stamp = spec.get("renewTime") or spec.get("acquireTime")
    if not stamp:
        return -math.inf, "never"
    try:
        renewed = parse_micro_time(stamp)
    except ValueError as e:
        return -math.inf, f"at an unreadable time ({e})"
    duration = spec.get("leaseDurationSeconds") or duration_s
    return renewed + duration - now, f"at {stamp}, for {duration} s"


# --- the elector (I/O) ------------------------------------------------------------------------
class LeaderElector:
    """Campaigns for the Lease `name` in `namespace` as `identity`, then keeps it renewed every
    `renew_every_s` seconds for `duration_s`-second terms; see the module docstring for the use.

    `acquire()` blocks until this replica leads; `is_leader` says whether it still does; `lost`
    (a threading.Event) is set, and `on_lost(reason)` called from one of the elector's threads
    (keep it short: set a flag, call_soon_threadsafe), when it stops leading; `release()` hands the
    Lease over on the way out."""

    def __init__(self, kube: Kube, namespace: str, identity: str, name: str = LEADER_LEASE, duration_s: int = 15,
                 renew_every_s: float = 5.0, on_lost: Callable[[str], None] | None = None):
        if not identity:
            raise ValueError("LeaderElector: identity must be a non-empty string (the pod name and a random suffix)")
        if not isinstance(duration_s, int) or duration_s < 1:
            raise ValueError(f"LeaderElector: duration_s must be a whole number of seconds >= 1 (the Lease's "
                             f"leaseDurationSeconds), got {duration_s!r}")
        if not 0 < renew_every_s < duration_s:
            raise ValueError(f"LeaderElector: renew_every_s must be above 0 and below duration_s={duration_s} "
                             f"(renewals must land before the Lease expires), got {renew_every_s!r}")
        self.kube, self.namespace, self.identity, self.name = kube, namespace, identity, name
        self.duration_s, self.renew_every_s, self.on_lost = duration_s, renew_every_s, on_lost
        self.lost = threading.Event()
        self.lost_reason = ""
        self.error: BaseException | None = None      # what ended the campaign early (a KubeForbidden, a bug)
        self.last_decision: Decision | None = None
        self._failed = False                          # the last round ended in an error or a lost race
        self._cond = threading.Condition()
        self._leading = False
        self._deadline = math.inf                     # time.monotonic() when leading ends unless renewed
        self._stopped = False
        self._threads: list[threading.Thread] = []

    @property
    def is_leader(self) -> bool:
        """True while this replica holds the Lease and its last renewal is recent enough."""
        with self._cond:
            return self._leading and time.monotonic() < self._deadline

    def acquire(self, timeout: float | None = None) -> bool:
        """Start campaigning (once) and block until this replica leads: True; False when `timeout`
        seconds passed first or the elector was released. Raises what ended the campaign: a
        KubeForbidden naming the missing rbac.yaml rule, say. From asyncio: `await
        asyncio.to_thread(elector.acquire)`."""
        with self._cond:
            if not self._threads and not self._stopped:
                self._threads = [threading.Thread(target=self._campaign, name="tasuki-leader", daemon=True),
                                 threading.Thread(target=self._watchdog, name="tasuki-leader-watchdog", daemon=True)]
                for thread in self._threads:
                    thread.start()
            self._cond.wait_for(lambda: self._leading or self.lost.is_set() or self._stopped, timeout)
            if self.error is not None:
                raise self.error
            return self._leading

    def try_lead(self) -> bool:
        """One round: read the Lease, decide, write it. True when this replica holds it afterwards.
        The campaign thread calls it; a test may call it on an elector that was not started."""
        started = time.monotonic()
        decision = decide(self.kube.get_lease(self.namespace, self.name), self.identity, time.time(),
                          self.duration_s, self.name)
        self.last_decision = decision
        if decision.action == WAIT:
            if self._leading:
                self._lose(f"another replica holds the Lease: {decision.reason}")
            return False
        try:
            if decision.action == ACQUIRE:
                self.kube.create_lease(self.namespace, decision.lease)
            else:
                self.kube.replace_lease(self.namespace, self.name, decision.lease)
        except KubeConflict as e:
            log.info("leader election: %s lost a race for the Lease (%s)", self.identity, e)
            self._failed = True
            return False
        with self._cond:
            if self.lost.is_set() or self._stopped:
                return False                          # a write that outlived the leadership leads nothing
            if not self._leading:
                log.info("leader election: %s leads now (%s)", self.identity, decision.reason)
            self._leading = True
            self._deadline = started + self.duration_s - self.renew_every_s
            self._cond.notify_all()
        return True

    def release(self) -> bool:
        """Stop campaigning and, when the Lease is still this replica's, hand it over: holder "" and
        a 1 s term, so the next replica takes it over at its next look instead of after the term.
        True when it was handed over. Best effort: when the API cannot be reached, the others
        take over when the term ends. Waits for a request in flight (at most the Kube's timeout).
        Call it on every way out, after a loss too: the Lease may still name this replica."""
        with self._cond:
            self._stopped = True
            self._leading = False
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return False
            self.kube.replace_lease(self.namespace, self.name, lease_body(
                self.name, "", time.time(), RELEASED_DURATION_S, acquire_time=spec.get("acquireTime"),
                transitions=int(spec.get("leaseTransitions") or 0), previous=lease))
        except KubeError as e:
            log.warning("leader election: %s could not release the Lease; the others take over when its %s s "
                        "term ends (%s)", self.identity, self.duration_s, e)
            return False
        log.info("leader election: %s released the Lease", self.identity)
        return True

    # --- the threads ----------------------------------------------------------------------------
    def _campaign(self) -> None:
        try:
            while not (self._stopped or self.lost.is_set()):
                self._failed = False
                try:
                    self.try_lead()
                except KubeForbidden:
                    raise                             # a missing permission does not heal by retrying
                except KubeError as e:
                    self._failed = True
                    log.warning("leader election: %s could not read or write the Lease, trying again in %s s "
                                "(%s)", self.identity, self._next_look(), e)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped or self.lost.is_set(), self._next_look())
        except BaseException as e:                    # the elector cannot go on: say so, do not lead blind
            self.error = e
            self._lose(f"leader election failed: {type(e).__name__}: {e}")

    def _next_look(self) -> float:
        """Renew every renew_every_s; after a failed round, again within RETRY_S (a leader has several
        tries before its watchdog gives up); a waiting replica looks again when the holder's term ends,
        if that comes sooner."""
        d = self.last_decision
        if self._failed:
            return min(self.renew_every_s, RETRY_S)
        if self._leading or d is None or d.action != WAIT:
            return self.renew_every_s
        return min(self.renew_every_s, d.seconds_left + 0.01)

    def _watchdog(self) -> None:
        with self._cond:
            while not (self._stopped or self.lost.is_set()):
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(None if left == math.inf else left)
            else:
                return
        self._lose(f"no renewal of the Lease for {self.duration_s - self.renew_every_s:g} s: another replica may "
                   f"take it over {self.renew_every_s:g} s from now")

    def _lose(self, reason: str) -> None:
        with self._cond:
            if self.lost.is_set():
                return
            was_leading = self._leading
            self._leading = False
            self.lost_reason = reason
            self.lost.set()
            self._cond.notify_all()
        log.error("leader election: %s %s: %s", self.identity, "stops leading" if was_leading else "gives up", reason)
        if self.on_lost is not None:
            self.on_lost(reason)
