"""The experiment end to end in a synthetic world whose hidden truth decides engagement.

Variant B is the tiny world's learned model; variant A ranks the same candidates with a
random scorer. Half of the simulated users go to each through the real service; each user
engages with what they were served as the world's hidden truth says (topic taste and
post quality, the generator's own story), through the real write API. The experiment
report must find B better beyond noise; with two identical models it must find no
difference. Both verdicts are asked at 99.9% confidence: the rankings depend on the wall
clock a little (freshness), so a run is not byte-for-byte repeatable, and at 95% two
identical models would be called different in about one run in twenty.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from core.scoring import FEATURES, LinearScorer
from nichefeed.v1 import ranking_pb2, writes_pb2
from tests.experiment_helpers import Running, clone_bundle
from training import experiment
from training import publish as publishing
from training.experiment_report import write_report
from training.schema import TRUTH_DIR

POSITIVE_KINDS = (writes_pb2.LIKE, writes_pb2.COMMENT, writes_pb2.SHARE, writes_pb2.SAVE)
NEGATIVE_KINDS = (writes_pb2.HIDE, writes_pb2.REPORT)


class HiddenTruth:
    """How a simulated user reacts to a post, from the world's truth/ files."""

    def __init__(self, data_dir, seed: int):
        truth = data_dir / TRUTH_DIR
        self.pref = np.load(truth / "user_topic_pref.npy")
        self.topic = np.load(truth / "community_topic.npy")
        self.quality = np.load(truth / "post_quality.npy")
        self.rng = np.random.default_rng(seed)

    def react(self, user: str, post: str, community: str) -> int | None:
        """An engagement kind, or None (the user scrolled past)."""
        taste = self.pref[int(user[1:]), self.topic[int(community[1:])]]
        quality = self.quality[int(post[1:])]
        appeal = 1 / (1 + np.exp(-(4.0 * taste + 2.5 * quality - 3.2)))
        r = self.rng.random()
        if r < appeal:
            return POSITIVE_KINDS[int(self.rng.random() * 4)]
        if quality < 0.25 and self.rng.random() < 0.35:
            return NEGATIVE_KINDS[int(self.rng.random() < 0.3)]
        return None


def simulate(running, truth: HiddenTruth, users: list[str], tag: str, rounds: int = 2) -> dict[str, int]:
    """Every user ranks a feed and engages with it, `rounds` times; returns answers per variant."""
    answers: dict[str, int] = {}
    for r in range(rounds):
        for user in users:
            resp = running.ranker.Rank(ranking_pb2.RankRequest(user_id=user, limit=20), timeout=10)
            answers[resp.experiment] = answers.get(resp.experiment, 0) + 1
            events = []
            for item in resp.items:
                if not item.post_id.startswith("p"):
                    continue
                kind = truth.react(user, item.post_id, item.community_id)
                if kind is not None:
                    events.append(
                        writes_pb2.EngagementEvent(
                            event_id=f"{tag}-{r}-{user}-{item.post_id}", user_id=user, post_id=item.post_id, kind=kind
                        )
                    )
            running.svc.served.flush()  # the served memory is written after the answer: let it land first
            if events:
                running.writer.WriteEngagements(writes_pb2.WriteEngagementsRequest(events=events), timeout=10)
    return answers


@pytest.fixture(scope="module")
def world(learned_bundle, tiny_data, tmp_path_factory):
    models = tmp_path_factory.mktemp("sim-models")
    rng = np.random.default_rng(3)
    random_scorer = LinearScorer(
        rng.normal(size=len(FEATURES)).astype(np.float32),
        np.zeros(len(FEATURES), np.float32),
        np.ones(len(FEATURES), np.float32),
        0.0,
        "random",
    )
    clone_bundle(learned_bundle, models, "A", scorer_json=random_scorer.to_json())
    clone_bundle(learned_bundle, models, "B")
    # The same model under two more versions, never served before the A/A test: a version
    # that served (B) has live counters from the engagements since, which a fresh one lacks.
    clone_bundle(learned_bundle, models, "B2")
    clone_bundle(learned_bundle, models, "B3")
    server = EmbeddedRedis(tmp_path_factory.mktemp("sim-redis"), port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    for version in ("A", "B", "B2", "B3"):
        publishing.publish(models / version, client, progress=False, serve=version == "A", force=True)
    running = Running(models, server.url)
    users = list(running.svc.holder.current.user_ids)
    yield running, client, models, users, tiny_data
    running.stop()
    client.close()
    server.stop()


def run_experiment(world, control: str, candidate: str, seed: int, tmp_path):
    running, client, models, users, data = world
    publishing.flip(client, control)
    running.poll()
    defn = experiment.start(client, models, candidate, share=50, salt=f"sim{seed}", grace_s=0)
    running.poll()
    try:
        answers = simulate(running, HiddenTruth(data, seed), users, tag=defn.id)
    finally:
        experiment.stop(client)
        running.poll()
    assert set(answers) == set(contract.VARIANTS) and min(answers.values()) > len(users) // 4
    experiment_id, analysis, md = write_report(client, tmp_path, defn.id, draws=4000, seed=seed, confidence=0.999)
    assert experiment_id == defn.id
    assert md.is_file() and (tmp_path / "report.png").stat().st_size > 0
    assert analysis["verdict"] in md.read_text()
    return analysis


def test_the_report_finds_the_learned_model_better_than_a_random_scorer(world, tmp_path):
    analysis = run_experiment(world, "A", "B", seed=1, tmp_path=tmp_path)
    assert analysis["verdict"].startswith("candidate better"), analysis
    served = {v: analysis["variants"][v]["served"] for v in contract.VARIANTS}
    assert min(served.values()) > 0
    assert analysis["differences"]["positive"]["verdict_ci"][0] > 0


def test_two_identical_models_show_no_difference(world, tmp_path):
    analysis = run_experiment(world, "B2", "B3", seed=2, tmp_path=tmp_path)
    assert analysis["verdict"] == "no difference beyond noise", analysis
    low, high = analysis["differences"]["positive"]["verdict_ci"]
    assert low <= 0 <= high
