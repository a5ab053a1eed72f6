"""The gRPC layer: one servicer per proto service, beside each other.

- rank.py: nichefeed.v1.FeedRanker (Rank) over the Rank pipeline (service/pipeline.py);
- writes.py: nichefeed.v1.FeedWriter over the write path (service/writes/);
- status.py: transport-free errors (service/errors.py) to status codes, and request
  decoding that answers INVALID_ARGUMENT for bytes that are not the expected message;
- accounting.py: one interceptor counting every call by its final status, and the
  request size limit (RESOURCE_EXHAUSTED, counted).
No ranking or write logic lives here: proto in, domain call, proto or status out.
"""
