"""A client that knows nothing but the server address: it learns the API through server
reflection (as grpcurl or a client in another language would) and calls Rank."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_rank_through_reflection_only(service):
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert "nichefeed.v1.FeedRanker" in db.get_services()
        pool = descriptor_pool.DescriptorPool(db)
        method = pool.FindServiceByName("nichefeed.v1.FeedRanker").FindMethodByName("Rank")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        rank = channel.unary_unary(
            "/nichefeed.v1.FeedRanker/Rank",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        request = json_format.ParseDict({"user_id": "u2", "limit": 5}, request_cls())
        answer = json_format.MessageToDict(rank(request, timeout=10))
    assert answer["modelVersion"] == service.holder.current.version
    assert 1 <= len(answer["items"]) <= 5
    assert all(item["postId"] and item["communityId"] for item in answer["items"])
