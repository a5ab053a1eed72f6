"""Hot reload: follow the current-version pointer in Redis and swap bundles atomically.

A version whose bundle is refused (missing, corrupt, half-written) is remembered with the
state of its directory so the reloader does not re-hash it every poll, but tries again
once that directory changes (a copy that completes, a bundle rewritten); meanwhile the
old model keeps serving, nichefeed_model_reloads_total{outcome="refused"} counts the
refusal and nichefeed_model_refused says a pointer names a model that cannot serve.

At start there is no old model: when the pointer's bundle cannot be served, the newest
one that can (the published history in Redis, newest first, then the bundles in the
models directory) serves instead, with one error line, nichefeed_model_fallbacks_total
and nichefeed_model_refused = 1, so a bad publish never takes a restarted process (or a
replacement worker) down with it.

Each poll also checks that the serving version's data is still in Redis (its published
marker, core.contract.published_key). When Redis comes back empty the holder says so
(`data_missing`): one error line, nichefeed_serving_data_missing = 1, writes answer
UNAVAILABLE (retryable) instead of "unknown post", Rank answers from memory (degraded)
as it does for any missing record; a republish clears it by itself.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from core import contract
from core.bundle import Bundle, BundleError, load_bundle
from core.scoring import tree_evaluator
from service.metrics import METRICS
from service.store import FeatureStore, StoreUnavailable

log = logging.getLogger("nichefeed.reload")


def data_missing_message(version: str) -> str:
    """The writes' UNAVAILABLE message while Redis lacks the serving version's data."""
    return (
        f"the data of model {version} is missing from Redis (emptied?): it must be published again "
        "(make publish); retry with the same event ids"
    )


class BundleHolder:
    """The serving bundle behind one reference. A request reads `.current` once and uses
    that object start to end, so a reload never mixes two versions in one answer."""

    def __init__(self, bundle: Bundle | None = None):
        self._bundle = bundle
        self._lock = threading.Lock()  # serialises loads, never taken by readers
        # Why the serving version's data is missing from Redis (the writes' UNAVAILABLE
        # message), None while it is there. Set and cleared by the reloader only.
        self.data_missing: str | None = None

    @property
    def current(self) -> Bundle | None:
        return self._bundle

    def swap(self, bundle: Bundle) -> Bundle | None:
        with self._lock:
            old, self._bundle = self._bundle, bundle
            return old


class ModelReloader:
    def __init__(self, holder: BundleHolder, store: FeatureStore, models_dir: Path, interval_s: float):
        self.holder = holder
        self.store = store
        self.models_dir = Path(models_dir)
        self.interval_s = interval_s
        self.refused: str | None = None
        self._refused_state: tuple | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-reloader", daemon=True)
        # Read on every poll after the pointer (service/experiments.py: the experiment
        # definition lives beside the pointer and is followed the same way).
        self.followers: list = []

    def load(self, version: str) -> bool:
        """Load `version` and make it current; False (and the old model kept) on refusal."""
        previous = self.holder.current
        try:
            bundle = load_bundle(self.models_dir / version)
        except BundleError as exc:
            self._refuse(version)
            log.error("model %s refused, still serving %s: %s", version, previous.version if previous else None, exc)
            return False
        self._serve(bundle, previous)
        self.refused = None
        METRICS.model_refused.set(0)
        return True

    def load_or_last_good(self, version: str, published: list[str]) -> bool:
        """At start: `version` (the pointer's), or when its bundle cannot be served the
        newest that can, from `published` (the history, newest first) and then the
        models directory; False when none can."""
        try:
            bundle = load_bundle(self.models_dir / version)
        except BundleError as exc:
            reason = exc
        else:
            self._serve(bundle, None)
            return True
        self._refuse(version)
        local = reversed(contract.list_versions(self.models_dir))
        for candidate in dict.fromkeys([*published, *local]):
            if candidate == version:
                continue
            try:
                bundle = load_bundle(self.models_dir / candidate)
            except BundleError:
                continue
            self._serve(bundle, None)
            METRICS.model_fallbacks.inc()
            log.error(
                "model %s (the current pointer) cannot be served: %s; serving the last good version %s instead "
                "until a servable model is published",
                version,
                reason,
                candidate,
            )
            return True
        log.error("model %s (the current pointer) cannot be served, nor any earlier one: %s", version, reason)
        return False

    def _refuse(self, version: str) -> None:
        """Remember a refused version (not re-hashed every poll) and count it."""
        self.refused = version
        self._refused_state = self._dir_state(version)
        METRICS.reloads.labels(outcome="refused").inc()
        METRICS.model_refused.set(1)

    def _serve(self, bundle: Bundle, previous: Bundle | None) -> None:
        self.holder.swap(bundle)
        METRICS.reloads.labels(outcome="loaded").inc()
        scorer = (bundle.scorer.kind, tree_evaluator(bundle.scorer))
        METRICS.set_model(
            bundle.version,
            bundle.manifest.created_at,
            bundle.index.ntotal,
            previous.version if previous else None,
            scorer,
        )
        log.info("serving model %s (scorer %s, trees scored by %s)", bundle.version, *scorer)

    def check_once(self) -> None:
        current = self.holder.current
        # A user record witnesses versions published before the marker existed.
        witness = contract.user_key(current.version, current.user_ids[0]) if current and current.user_ids else None
        try:
            version, present = self.store.poll_pointer(current.version if current else None, witness)
        except StoreUnavailable:
            return  # keep serving what we have; Redis health is in its own metrics
        if current is not None and (version is None or version == current.version):
            self._track_data(current.version, version is not None and present)
        if not version or (current is not None and version == current.version):
            if current is not None and version == current.version and self.refused:
                self.refused = None  # rolled back to what serves
                METRICS.model_refused.set(0)
            return
        if version == self.refused and self._dir_state(version) == self._refused_state:
            return
        self.load(version)

    def _track_data(self, serving: str, present: bool) -> None:
        """Say once when the serving version's data leaves Redis, and when it is back."""
        if not present and self.holder.data_missing is None:
            self.holder.data_missing = data_missing_message(serving)
            METRICS.serving_data_missing.set(1)
            log.error(
                "Redis has lost the data of serving model %s (pointer or published marker gone: restarted empty "
                "or failed over?); Rank answers from memory (degraded), writes answer UNAVAILABLE, until the model "
                "is published again (make publish)",
                serving,
            )
        elif present and self.holder.data_missing is not None:
            self.holder.data_missing = None
            METRICS.serving_data_missing.set(0)
            log.warning("the data of model %s is in Redis again: serving and writing normally", serving)

    def _dir_state(self, version: str) -> tuple:
        """Cheap fingerprint of a bundle directory: names, sizes and mtimes of its files."""
        path = self.models_dir / version
        try:
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir()))
        except OSError:
            return ()

    def poll(self) -> None:
        """The pointer, then whatever follows it (each one's failure kept to itself)."""
        for check in (self.check_once, *[f.check_once for f in self.followers]):
            try:
                check()
            except Exception:  # a reload bug must never kill the reloader thread
                log.exception("reload check failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
