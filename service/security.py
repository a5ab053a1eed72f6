"""Transport security and caller authentication for the gRPC server, both optional.

- TLS: --tls-cert and --tls-key (PEM files) serve gRPC over TLS; with --tls-client-ca
  as well, clients must present a certificate signed by that CA (mutual TLS).
- Bearer token: with --auth-token-file, every call must carry the metadata
  `authorization: Bearer <token>` (the scheme in any case, RFC 6750; the token compared
  in constant time) or it ends UNAUTHENTICATED, counted in nichefeed_requests_total.
  Without TLS the token crosses the network in clear: the start logs a warning.
  The token lives in a file so it never shows in `ps` or in the environment of children.
  Health checks stay open: load balancers and orchestrators probe without credentials.
Redis takes its own: a `rediss://` URL for TLS and `redis://:password@host` for AUTH.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import grpc

from service.api.accounting import count, method_name
from service.config import Config

log = logging.getLogger("nichefeed.security")

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class SecurityConfigError(ValueError):
    """TLS or token settings that cannot work; the message names the setting."""


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    if not data.strip():
        raise SecurityConfigError(f"{setting}: {path} is empty")
    return data


def server_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured, else None (plaintext)."""
    if not cfg.tls_cert and not cfg.tls_key and not cfg.tls_client_ca:
        return None
    if not cfg.tls_cert or not cfg.tls_key:
        raise SecurityConfigError("tls_cert: --tls-cert and --tls-key go together")
    cert, key = _read(cfg.tls_cert, "tls_cert"), _read(cfg.tls_key, "tls_key")
    ca = _read(cfg.tls_client_ca, "tls_client_ca") if cfg.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _deny(request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: missing or wrong bearer token")


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = token.encode()
        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(_deny),
            (True, False): grpc.stream_unary_rpc_method_handler(_deny),
            (False, True): grpc.unary_stream_rpc_method_handler(_deny),
            (True, True): grpc.stream_stream_rpc_method_handler(_deny),
        }

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method in OPEN_METHODS:
            return continuation(handler_call_details)
        got = next((v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"), "")
        got = got.encode() if isinstance(got, str) else got
        scheme, _, token = got.partition(b" ")
        # Compared even when the scheme is wrong: the time taken says nothing about the token.
        if hmac.compare_digest(token.strip(), self._expected) & (scheme.lower() == b"bearer"):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)  # answer in the shape of the method
        if handler is None:
            return None
        count(method_name(handler_call_details.method), "UNAUTHENTICATED")
        return self._deny[(handler.request_streaming, handler.response_streaming)]


def interceptors(cfg: Config) -> list[grpc.ServerInterceptor]:
    if not cfg.auth_token_file:
        return []
    token = _read(cfg.auth_token_file, "auth_token_file").decode(errors="strict").strip()
    if len(token) < 16:
        raise SecurityConfigError("auth_token_file: the token must be at least 16 characters")
    if not cfg.tls_cert:
        log.warning(
            "a bearer token is required but gRPC is served without TLS: the token crosses the network in "
            "clear text (set --tls-cert and --tls-key)"
        )
    return [BearerTokenInterceptor(token)]
