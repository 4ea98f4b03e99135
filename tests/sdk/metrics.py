"""Tollgate's /metrics, read by the official Prometheus Python client's OpenMetrics parser
after the SDK checks have driven traffic through the gateway (run by tests/sdk/run.sh).

Checks that the exposition parses as OpenMetrics, that every family an operator relies on
is there with the right type, and that the figures match the traffic: chat calls counted
under their route template, their latency histogram consistent, ledger holds captured.
"""
import os
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

BASE, ADMIN_KEY = os.environ["BASE"], os.environ["ADMIN_KEY"]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


request = urllib.request.Request(f"{BASE}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
with urllib.request.urlopen(request) as response:
    content_type = response.headers["content-type"]
    text = response.read().decode()
check(content_type.startswith("application/openmetrics-text"), f"served as OpenMetrics ({content_type})")
families = {f.name: f for f in text_string_to_metric_families(text)}

expected = {
    "tollgate_http_requests": "counter",
    "tollgate_http_request_duration_seconds": "histogram",
    "tollgate_ledger_operations": "counter",
    "tollgate_job_runs": "counter",
    "tollgate_job_last_success_timestamp_seconds": "gauge",
    "tollgate_queue_depth": "gauge",
    "tollgate_queue_oldest_age_seconds": "gauge",
    "tollgate_db_pool_connections": "gauge",
}
for name, kind in expected.items():
    check(name in families and families[name].type == kind, f"{name} is a {kind}")


def samples(family, suffix="", **labels):
    return [
        s for s in families[family].samples
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    ]


chat = samples("tollgate_http_requests", "_total", method="POST", route="/v1/chat/completions", status="200")
chat_calls = sum(s.value for s in chat)
check(chat_calls >= 2, f"chat completions counted by route template ({chat_calls:.0f})")
count = samples("tollgate_http_request_duration_seconds", "_count", method="POST", route="/v1/chat/completions")
buckets = samples("tollgate_http_request_duration_seconds", "_bucket", method="POST", route="/v1/chat/completions")
inf = [b.value for b in buckets if b.labels["le"] == "+Inf"]
check(count and inf and inf[0] == count[0].value, "the histogram's +Inf bucket equals its count")
check(count[0].value >= chat_calls, "every chat call was timed")
values = [b.value for b in sorted(buckets, key=lambda b: float(b.labels["le"]))]
check(values == sorted(values), "bucket counts are cumulative")
captured = sum(s.value for s in samples("tollgate_ledger_operations", "_total", operation="capture", outcome="executed"))
reserved = sum(s.value for s in samples("tollgate_ledger_operations", "_total", operation="reserve", outcome="executed"))
check(reserved >= 1 and captured >= 1, f"gateway holds reserved ({reserved:.0f}) and captured ({captured:.0f})")
refused = samples("tollgate_ledger_operations", "_total", outcome="refused")
check(all(s.labels["reason"] for s in refused), "every refusal names its reason")
check(samples("tollgate_job_runs", "_total", job="expire_holds"), "the hold-expiry job has run")
check(samples("tollgate_db_pool_connections", state="max")[0].value >= 1, "the pool's size is exported")
print("metrics parsed by prometheus_client's OpenMetrics parser")
