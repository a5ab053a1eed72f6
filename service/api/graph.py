"""CommunityGraph: graph and moderation requests -> the write path (service/writes/graph.py).

The same unary shape as FeedWriter (size limit, status mapping, write metrics by kind),
so the graph RPCs follow every convention of the write API.
"""

from __future__ import annotations

import grpc

from nichefeed.v1 import graph_pb2, graph_pb2_grpc, writes_pb2
from service.api.status import safe_parser
from service.api.writes import FeedWriterServicer

GRAPH_SERVICE_NAME = graph_pb2.DESCRIPTOR.services_by_name["CommunityGraph"].full_name


class CommunityGraphServicer(graph_pb2_grpc.CommunityGraphServicer):
    def __init__(self, writer: FeedWriterServicer):
        self.writer = writer  # its unary path: limits, statuses and metrics in one place

    def WriteGraph(self, request, context):
        applier = self.writer.applier
        return self.writer._unary("WriteGraph", "graph", request, "WriteGraphRequest", applier.write_graph, context)

    def WriteRules(self, request, context):
        applier = self.writer.applier
        return self.writer._unary("WriteRules", "rule", request, "WriteRulesRequest", applier.write_rules, context)


def graph_handlers(servicer: CommunityGraphServicer) -> grpc.GenericRpcHandler:
    """CommunityGraph's handlers, with deserializers that turn garbage into INVALID_ARGUMENT."""
    out = writes_pb2.WriteResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        GRAPH_SERVICE_NAME,
        {
            "WriteGraph": grpc.unary_unary_rpc_method_handler(
                servicer.WriteGraph,
                request_deserializer=safe_parser(graph_pb2.WriteGraphRequest),
                response_serializer=out,
            ),
            "WriteRules": grpc.unary_unary_rpc_method_handler(
                servicer.WriteRules,
                request_deserializer=safe_parser(graph_pb2.WriteRulesRequest),
                response_serializer=out,
            ),
        },
    )
