"""Validate: check the request. Every list and string is bounded; errors name the field."""

from __future__ import annotations

from core import contract
from service.errors import InvalidArgument
from service.pipeline import RankContext

MAX_LIST = 1000


def _check_id(value: str, field_name: str, required: bool) -> None:
    if not value:
        if required:
            raise InvalidArgument(field_name, "must not be empty")
        return
    problem = contract.id_problem(value)
    if problem:
        raise InvalidArgument(field_name, problem)


class ValidateRequest:
    name = "validate"

    def __init__(self, max_limit: int):
        self.max_limit = max_limit

    def run(self, ctx: RankContext) -> None:
        q = ctx.query
        _check_id(q.user_id, "user_id", required=True)
        if not 1 <= q.limit <= self.max_limit:
            raise InvalidArgument("limit", f"must be between 1 and {self.max_limit}, got {q.limit}")
        _check_id(q.community_id, "community_id", required=False)
        for name in ("candidate_post_ids", "exclude_post_ids"):
            values = getattr(q, name)
            if len(values) > MAX_LIST:
                raise InvalidArgument(name, f"has {len(values)} ids, at most {MAX_LIST} allowed")
            for i, v in enumerate(values):
                _check_id(v, f"{name}[{i}]", required=True)
