"""Per-stage latency shares from the service's own Prometheus metrics.

Scrape /metrics before and after a measured run; the difference of each histogram's
_sum and _count is that run's time and count. Stage names are read from the metrics
(nichefeed_stage_latency_seconds{stage=...}), never hard-coded, so a stage added or
renamed by the service shows up here as it is.

Shares are of the mean Rank latency the client observed:
  stage              mean time of that stage (its own timer)
  slot wait          nichefeed_rank_slot_wait_seconds: waiting for one of the process's
                     ranking slots (--rank-slots) before the pipeline, i.e. queueing
  handler other      nichefeed_request_latency_seconds{method="Rank"} minus the stages and
                     the slot wait: request conversion and building the RankResponse
                     message in the servicer
  grpc + transport   client-observed mean minus the server's request latency: protobuf
                     (de)serialisation, the gRPC stack on both sides, queueing for a
                     handler thread, loopback, the client
"serialisation" in the issue's sense is `respond` (building items) + handler other +
the protobuf part of grpc + transport; the metrics cannot split the last one further.

Beside the wall times, nichefeed_rank_pipeline_cpu_seconds gives the pipeline's own
thread CPU per call: the process's CPU per call (from /proc) minus it is what the gRPC
layer and the servicer's other threads cost.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

STAGE_METRIC = "nichefeed_stage_latency_seconds"
REQUEST_METRIC = "nichefeed_request_latency_seconds"
CANDIDATES_METRIC = "nichefeed_stage_candidates_total"
SLOT_WAIT_METRIC = "nichefeed_rank_slot_wait_seconds"
PIPELINE_CPU_METRIC = "nichefeed_rank_pipeline_cpu_seconds"


def parse(text: str | None) -> dict:
    """{'stages': {name: (sum, count)}, 'request': (sum, count), 'candidates': {name: n}, 'order': [...]}"""
    out = {"stages": {}, "request": (0.0, 0.0), "candidates": {}, "order": [], "slot_wait": 0.0, "pipeline_cpu": None}
    if not text:
        return out
    req_sum = req_count = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name == STAGE_METRIC:
            for s in fam.samples:
                stage = s.labels.get("stage")
                if stage is None:
                    continue
                if stage not in out["stages"]:
                    out["stages"][stage] = [0.0, 0.0]
                    out["order"].append(stage)
                if s.name.endswith("_sum"):
                    out["stages"][stage][0] += s.value
                elif s.name.endswith("_count"):
                    out["stages"][stage][1] += s.value
        elif fam.name == REQUEST_METRIC:
            for s in fam.samples:
                if s.labels.get("method") != "Rank":
                    continue
                if s.name.endswith("_sum"):
                    req_sum += s.value
                elif s.name.endswith("_count"):
                    req_count += s.value
        elif fam.name == SLOT_WAIT_METRIC:
            out["slot_wait"] += sum(s.value for s in fam.samples if s.name.endswith("_sum"))
        elif fam.name == PIPELINE_CPU_METRIC:
            out["pipeline_cpu"] = sum(s.value for s in fam.samples if s.name.endswith("_sum"))
        elif fam.name in (CANDIDATES_METRIC, CANDIDATES_METRIC[: -len("_total")]):
            for s in fam.samples:
                if s.name.endswith("_total") and "stage" in s.labels:
                    out["candidates"][s.labels["stage"]] = out["candidates"].get(s.labels["stage"], 0.0) + s.value
    out["request"] = (req_sum, req_count)
    return out


def breakdown(before: str | None, after: str | None, client_mean_ms: float | None) -> dict | None:
    """Mean ms and share per stage over the requests between two scrapes."""
    a, b = parse(before), parse(after)
    req_sum = b["request"][0] - a["request"][0]
    req_n = b["request"][1] - a["request"][1]
    if req_n <= 0:
        return None
    stages = []
    total_stage_ms = 0.0
    for name in b["order"]:
        s1, n1 = b["stages"][name]
        s0, n0 = a["stages"].get(name, (0.0, 0.0))
        # Mean per Rank request (a stage skipped by an early error counts as 0 there).
        ms = 1000.0 * (s1 - s0) / req_n
        total_stage_ms += ms
        cand = (b["candidates"].get(name, 0.0) - a["candidates"].get(name, 0.0)) / req_n
        stages.append({"stage": name, "mean_ms": round(ms, 3), "calls": int(n1 - n0), "candidates_out": round(cand, 1)})
    server_ms = 1000.0 * req_sum / req_n
    wait_ms = 1000.0 * (b["slot_wait"] - a["slot_wait"]) / req_n
    rows = [{"stage": "slot wait", "mean_ms": round(wait_ms, 3)}] + stages
    rows.append({"stage": "handler other", "mean_ms": round(server_ms - total_stage_ms - wait_ms, 3)})
    total = client_mean_ms if client_mean_ms and client_mean_ms >= server_ms else server_ms
    if client_mean_ms:
        rows.append({"stage": "grpc + transport", "mean_ms": round(max(client_mean_ms - server_ms, 0.0), 3)})
    for r in rows:
        r["share"] = round(r["mean_ms"] / total, 4) if total > 0 else None
    slowest = max(stages, key=lambda r: r["mean_ms"])["stage"] if stages else None
    # A server from before the metric has none: None, not 0.
    cpu_ms = None
    if a["pipeline_cpu"] is not None and b["pipeline_cpu"] is not None:
        cpu_ms = round(1000.0 * (b["pipeline_cpu"] - a["pipeline_cpu"]) / req_n, 3)
    return {
        "requests": int(req_n),
        "server_mean_ms": round(server_ms, 3),
        "pipeline_cpu_ms": cpu_ms,
        "client_mean_ms": client_mean_ms,
        "stages_sum_ms": round(total_stage_ms, 3),
        "rows": rows,
        "slowest_stage": slowest,
    }
