"""Bad input gets a clear status naming the field; bad startup gets a one-line error."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from core.embedded_redis import free_port
from nichefeed.v1 import ranking_pb2


@pytest.mark.parametrize(
    "request_kwargs, code, field",
    [
        ({"user_id": "", "limit": 5}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        ({"user_id": "u1", "limit": 0}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        ({"user_id": "u1", "limit": -3}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        ({"user_id": "u1", "limit": 201}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        ({"user_id": "x" * 129, "limit": 5}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        (
            {"user_id": "u1", "limit": 5, "candidate_post_ids": ["p1"] * 1001},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_post_ids",
        ),
        (
            {"user_id": "u1", "limit": 5, "exclude_post_ids": ["p1", ""]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "exclude_post_ids[1]",
        ),
        ({"user_id": "nobody", "limit": 5}, grpc.StatusCode.NOT_FOUND, "user_id"),
        ({"user_id": "u1", "limit": 5, "community_id": "no-such-group"}, grpc.StatusCode.NOT_FOUND, "community_id"),
    ],
)
def test_bad_requests_get_a_status_naming_the_field(ranker, request_kwargs, code, field):
    with pytest.raises(grpc.RpcError) as err:
        ranker.Rank(ranking_pb2.RankRequest(**request_kwargs), timeout=10)
    assert err.value.code() == code
    assert err.value.details().startswith(field + ":")


def test_unreachable_redis_at_start_is_one_line_naming_the_address(published):
    port = free_port()  # nothing listens here
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "--redis-url",
            f"redis://127.0.0.1:{port}/0",
            "--models-dir",
            str(published.parent),
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in proc.stderr
