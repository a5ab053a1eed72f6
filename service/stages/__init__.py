"""The stages of the Rank pipeline; default_stages() lists them in the order they run."""

from __future__ import annotations

from core.retrieval import RetrievalParams
from service.config import Config
from service.store import FeatureStore


def default_stages(cfg: Config, store: FeatureStore) -> list:
    from service.stages.diversify import DiversifyCandidates
    from service.stages.filters import FilterCandidates, default_filters
    from service.stages.hydrate import HydrateCandidates, HydrateUser
    from service.stages.respond import BuildResponse
    from service.stages.retrieve import RetrieveCandidates
    from service.stages.score import ScoreCandidates
    from service.stages.validate import ValidateRequest

    retrieval = RetrievalParams(candidates=cfg.candidates)
    return [
        ValidateRequest(cfg.max_limit),
        HydrateUser(store, retrieval),
        RetrieveCandidates(retrieval, store=store),
        HydrateCandidates(store),
        FilterCandidates(default_filters(cfg.max_post_age_days)),
        ScoreCandidates(),
        DiversifyCandidates(cfg.community_share, cfg.per_author, cfg.small_group_members, cfg.small_group_share),
        BuildResponse(),
    ]
