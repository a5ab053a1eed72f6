"""Which Redis a URL names, and a client for it: one node or a Redis Cluster.

    redis://[:password@]host:port/0          one node (also rediss://, unix://)
    redis+cluster://[:password@]h1:p1,h2:p2  a Redis Cluster; every host:port is a seed
    rediss+cluster://...                     the same over TLS

A seed is only where the client first asks for the cluster's layout (CLUSTER SLOTS): one
live seed is enough, several survive one being down. Every other module takes the client
this returns and stays the same in both modes, except where a command spans keys
(`mget`, `set_many`): those split by slot here.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


class RedisUrlError(ValueError):
    """A Redis URL this service cannot use; the message says what is wrong."""


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """(seeds, username, password, tls) of a cluster URL; RedisUrlError when malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        raise RedisUrlError(f"not a cluster URL (scheme {parts.scheme!r}; expected redis+cluster://)")
    creds, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    password = parse_qs(parts.query).get("password", [password])[0]
    if parts.path not in ("", "/", "/0"):
        raise RedisUrlError(f"a Redis Cluster has database 0 only, not {parts.path.lstrip('/')!r}")
    seeds = []
    for item in filter(None, hosts.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise RedisUrlError(f"cluster seed {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise RedisUrlError("a cluster URL needs at least one seed host:port")
    return seeds, username, password, CLUSTER_SCHEMES[scheme]


def connect(url: str, **kwargs) -> redis.Redis | RedisCluster:
    """A client for `url`: redis.Redis for one node, RedisCluster for a cluster URL.
    kwargs are connection options both accept (socket_timeout, ...)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **kwargs)
    seeds, username, password, tls = cluster_seeds(url)
    kwargs.pop("max_connections", None)  # per node in a cluster: redis-py's default
    kwargs.pop("retry_on_timeout", None)  # deprecated there (a timeout is never retried by us)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in seeds],
        username=username,
        password=password,
        ssl=tls,
        require_full_coverage=False,  # a slot range whose master is down fails alone
        **kwargs,
    )


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def mget(client, keys: list) -> list:
    """MGET of keys in any slots, values in key order (split by slot in a cluster)."""
    if not keys:
        return []
    return client.mget_nonatomic(keys) if is_cluster(client) else client.mget(keys)


def set_many(pipe, items: dict) -> None:
    """Queue SETs of many keys on a pipeline: one MSET on one node, a SET each in a
    cluster (its pipeline groups them by node and sends each node its share at once)."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        for key, value in items.items():
            pipe.set(key, value)
    else:
        pipe.mset(items)
