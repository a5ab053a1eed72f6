"""The shared core of nichefeed: what both training and serving depend on.

- contract: bundle files, the manifest, Redis keys and packed record formats (the one
  place the training-service contract is spelled);
- bundle: loading and verifying a model bundle;
- scoring: the per-(user, post) features and the scorer (one function for both sides);
- post_vectors: how a post gets its vector (training and the live write path);
- retrieval, hotness, neighbours: the candidate rule, decayed engagement and
  co-engagement, computed alike offline and on the hot path;
- embedded_redis: the private redis-server for `make serve`, the CLI and the tests;
- settings: the environment variables both the service and the training CLI read;
- flags: command-line flags generated from parameter dataclasses.

Nothing in core imports service/ or training/.
"""
