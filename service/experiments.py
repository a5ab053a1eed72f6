"""Experiments: a second published version served to a salted hash bucket of users.

The definition (candidate version, share, salt, start, safety and shadow settings) lives
in Redis beside the current pointer (contract.EXPERIMENT_KEY); each worker's reloader
reads it on every poll (ExperimentFollower), loads the candidate's bundle beside the
control's, and routes each request by core.experiments.variant_of: every worker agrees
without talking to the others, and a user stays in one variant for the experiment's life.
The experiment serves only while the pointer still names the control it started with
(a publish in the middle ends it for serving; the report still reads what it logged).

Safety: each worker tallies requests, server errors and degraded answers per variant;
once both variants have `min_requests`, a candidate whose error or degraded rate exceeds
control's by more than `max_excess` is stopped: the definition is deleted from Redis
(only if it is still the same experiment), the reason kept under
contract.EXPERIMENT_STOPPED_KEY, one error line, nichefeed_experiment_auto_stops_total.
The other workers stop serving it at their next poll.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import contract
from core.bundle import Bundle, BundleError, load_bundle
from core.experiments import variant_of
from service.metrics import METRICS
from service.store import FeatureStore, StoreUnavailable

log = logging.getLogger("nichefeed.experiments")

NO_VARIANT = "none"  # the metrics' variant label when no experiment runs
# Codes that are the server's failure, not the client's mistake: what the safety check counts.
SERVER_ERRORS = frozenset({"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN"})

# Posts taken out of the control's feeds since (or just before) the candidate began: the
# control's live stream holds every deletion ('d'), members-only change ('x') and
# moderator's removal ('r'); replayed onto the candidate's records in stream order, in
# one script, so the candidate never shows what the control hides. A post made public
# again ('x' 0) stays private in the candidate (fails closed: the candidate may not know
# whether its community is private). Post keys are built from ARGV[2]: the stream names them.
# KEYS: control live stream. ARGV: last id replayed, candidate post key prefix, flags offset, count.
# Returns the last id replayed.
_REPLAY_LUA = """
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[4])
local off, last = tonumber(ARGV[3]), ARGV[1]
for _, e in ipairs(entries) do
  last = e[1]
  local f, pid, d, x, r = e[2], nil, nil, nil, nil
  for j = 1, #f, 2 do
    if f[j] == '@P@' then pid = f[j + 1] elseif f[j] == '@D@' then d = f[j + 1]
    elseif f[j] == '@X@' then x = f[j + 1] elseif f[j] == '@R@' then r = f[j + 1] end
  end
  if pid and (d == '1' or x == '1' or r) then
    local pkey = ARGV[2] .. pid .. '@SUFFIX@'
    local cur = redis.call('GETRANGE', pkey, off, off)
    if cur ~= '' then
      local fl = string.byte(cur)
      if d == '1' then fl = bit.bor(fl, @DELETED@) end
      if x == '1' then fl = bit.bor(fl, @PRIVATE@) end
      if r == '1' then fl = bit.bor(fl, @REMOVED@) elseif r == '0' then fl = bit.band(fl, bit.bnot(@REMOVED@)) end
      redis.call('SETRANGE', pkey, off, string.char(fl))
    end
  end
end
return last
"""
for _name, _value in {
    "@P@": contract.LIVE_POST,
    "@D@": contract.LIVE_DELETED,
    "@X@": contract.LIVE_PRIVATE,
    "@R@": contract.LIVE_REMOVED,
    "@DELETED@": contract.FLAG_DELETED,
    "@PRIVATE@": contract.FLAG_PRIVATE,
    "@REMOVED@": contract.FLAG_REMOVED,
    "@SUFFIX@": contract.POST_KEY_SUFFIX,
}.items():
    _REPLAY_LUA = _REPLAY_LUA.replace(_name, str(_value))
REPLAY_BATCH = 5_000  # stream entries per script call (Redis is single-threaded: keep each call short)

# Delete the definition only if it is still the one judged (a new experiment started
# meanwhile must not be stopped by a verdict on the old one), and say why.
_STOP_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Routing:
    """Which bundle serves one request and under which variant."""

    bundle: Bundle
    variant: str = ""  # contract.VARIANT_*, "" when no experiment serves
    experiment_id: str = ""

    @property
    def label(self) -> str:
        return self.variant or NO_VARIANT


class VariantTally:
    """One worker's counts of one variant since the experiment started (the safety check)."""

    def __init__(self) -> None:
        self.requests = self.errors = self.degraded = 0
        self._lock = threading.Lock()

    def add(self, error: bool, degraded: bool) -> None:
        with self._lock:
            self.requests += 1
            self.errors += error
            self.degraded += degraded

    def rates(self) -> tuple[int, float, float]:
        with self._lock:
            n = self.requests
            return n, (self.errors / n if n else 0.0), (self.degraded / n if n else 0.0)


@dataclass
class Running:
    raw: bytes  # the definition as stored (compare-and-delete on auto stop)
    defn: contract.ExperimentDefinition
    candidate: Bundle | None  # None: refused, everyone gets control
    replayed: str = "0"  # the control's live stream is replayed onto the candidate up to here
    ready: bool = False  # grace over and replayed once: the candidate may serve
    tallies: dict[str, VariantTally] = field(default_factory=lambda: {v: VariantTally() for v in contract.VARIANTS})


class ExperimentHolder:
    """The running experiment of this worker behind one reference (swapped by the follower)."""

    def __init__(self) -> None:
        self.running: Running | None = None

    @property
    def current(self) -> Bundle | None:
        """The candidate bundle (the live index follower of the candidate reads this)."""
        running = self.running
        return running.candidate if running is not None else None

    def definition(self) -> contract.ExperimentDefinition | None:
        running = self.running
        return running.defn if running is not None and running.ready else None

    def route(self, user_id: str, control: Bundle) -> Routing:
        running = self.running
        if running is None or not running.ready or running.defn.control != control.version:
            return Routing(control)
        variant = variant_of(running.defn, user_id)
        bundle = running.candidate if variant == contract.VARIANT_CANDIDATE else control
        return Routing(bundle, variant, running.defn.id)

    def count(self, routing: Routing, code: str, degraded: bool) -> None:
        """Tally one answered (or failed) request for the safety check."""
        running = self.running
        if routing.variant and running is not None and running.defn.id == routing.experiment_id:
            running.tallies[routing.variant].add(code in SERVER_ERRORS, degraded)


def verdict(running: Running) -> str | None:
    """Why the candidate must stop (None while it may go on)."""
    defn = running.defn
    n_ctl, err_ctl, deg_ctl = running.tallies[contract.VARIANT_CONTROL].rates()
    n_cand, err_cand, deg_cand = running.tallies[contract.VARIANT_CANDIDATE].rates()
    if min(n_ctl, n_cand) < defn.min_requests:
        return None
    for rate, cand, ctl in (("error", err_cand, err_ctl), ("degraded", deg_cand, deg_ctl)):
        if cand - ctl > defn.max_excess:
            return (
                f"{rate}: candidate {defn.candidate} {cand:.1%} of {n_cand} requests vs control "
                f"{defn.control} {ctl:.1%} of {n_ctl} (allowed excess {defn.max_excess:.1%})"
            )
    return None


class ExperimentFollower:
    """Reads the experiment definition on the reloader's poll and keeps the holder in step."""

    def __init__(self, holder: ExperimentHolder, store: FeatureStore, models_dir: Path):
        self.holder = holder
        self.store = store
        self.models_dir = Path(models_dir)
        self._refused: bytes | None = None  # a definition already refused: not re-hashed every poll
        self._stop = store.client.register_script(_STOP_LUA)
        self._replay = store.client.register_script(_REPLAY_LUA)
        self.clock = time.time

    def check_once(self) -> None:
        try:
            (raw,) = self.store.round_trip("pointer", [("GET", contract.EXPERIMENT_KEY)])
        except StoreUnavailable:
            return  # keep routing as before; Redis health has its own metrics
        if isinstance(raw, Exception):
            return
        running = self.holder.running
        if raw is None:
            if running is not None:
                self._end(running, "the experiment was stopped")
            return
        if running is not None and running.raw == raw:
            reason = verdict(running)
            if reason:
                self._auto_stop(running, reason)
            else:
                self._keep_in_step(running)
            return
        if raw == self._refused:
            return
        self._start(raw, running)

    def _start(self, raw: bytes, running: Running | None) -> None:
        try:
            defn = contract.ExperimentDefinition.from_json(raw)
        except contract.ContractError as exc:
            self._refuse(raw, running, f"{exc}")
            return
        candidate = None
        if running is not None and running.candidate is not None and running.candidate.version == defn.candidate:
            candidate = running.candidate  # the same bundle: do not load it twice
        else:
            try:
                candidate = load_bundle(self.models_dir / defn.candidate)
            except BundleError as exc:
                self._refuse(raw, running, f"candidate {defn.candidate} cannot be loaded: {exc}")
                return
        if running is not None:
            self._clear_gauge(running)
        self._refused = None
        METRICS.experiment_refused.set(0)
        self.holder.running = Running(raw, defn, candidate)
        self._keep_in_step(self.holder.running)
        METRICS.experiment_share.labels(control=defn.control, candidate=defn.candidate).set(defn.share)
        log.warning(
            "experiment %s: candidate %s serves %g%% of users beside control %s (shadow rate %g)",
            defn.id,
            defn.candidate,
            defn.share,
            defn.control,
            defn.shadow_rate,
        )

    def _keep_in_step(self, running: Running) -> None:
        """Replay what the control hid since the last poll onto the candidate; once the
        grace period is over and a replay has completed, let the candidate serve."""
        if running.candidate is None:
            return
        stream = contract.live_stream_key(running.defn.control)
        prefix = contract.post_key_prefix(running.defn.candidate)
        offset = contract.post_field_offset("flags")
        try:
            while True:
                last = self._replay(keys=[stream], args=[running.replayed, prefix, offset, REPLAY_BATCH])
                last = last.decode() if isinstance(last, bytes) else str(last)
                if last == running.replayed:
                    break
                running.replayed = last
        except Exception as exc:  # Redis down: the candidate waits (or keeps serving what it was)
            log.warning("experiment %s: could not replay the control's live stream: %s", running.defn.id, exc)
            return
        if not running.ready and self.clock() >= running.defn.started_at + running.defn.grace_s:
            running.ready = True
            log.warning("experiment %s: candidate %s serves from now on", running.defn.id, running.defn.candidate)

    def _refuse(self, raw: bytes, running: Running | None, reason: str) -> None:
        self._refused = raw
        if running is not None:
            self._clear_gauge(running)
        self.holder.running = None
        METRICS.experiment_refused.set(1)
        log.error("experiment not served (everyone gets the current version): %s", reason)

    def _end(self, running: Running, why: str) -> None:
        self.holder.running = None
        self._clear_gauge(running)
        METRICS.experiment_refused.set(0)
        log.warning("experiment %s ended (%s): everyone gets %s", running.defn.id, why, running.defn.control)

    def _auto_stop(self, running: Running, reason: str) -> None:
        defn = running.defn
        stopped = json.dumps({"definition": json.loads(running.raw), "reason": reason, "stopped_at": int(time.time())})
        try:
            won = bool(
                self._stop(keys=[contract.EXPERIMENT_KEY, contract.EXPERIMENT_STOPPED_KEY], args=[running.raw, stopped])
            )
        except Exception as exc:  # Redis down: stop serving it here anyway, retry the delete next poll
            log.error("experiment %s: could not delete its definition (%s); not serving it here", defn.id, exc)
            won = False
        rate = reason.split(":", 1)[0]
        METRICS.experiment_auto_stops.labels(rate=rate).inc()
        log.error("experiment %s stopped automatically: %s", defn.id, reason)
        self._refused = running.raw if not won else None  # never resume a definition judged unsafe
        self._end(running, "stopped automatically" if won else "judged unsafe by this worker")

    @staticmethod
    def _clear_gauge(running: Running) -> None:
        METRICS.experiment_share.labels(control=running.defn.control, candidate=running.defn.candidate).set(0)
