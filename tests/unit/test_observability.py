"""Request metrics are counted in the process and added to Prometheus in batches."""

from prometheus_client import CollectorRegistry, Histogram

from openplatform.observability import HTTP_LATENCY, HTTP_REQUESTS, LATENCY_BUCKETS_S, RequestTally

ROUTE = "_test/tally"


def samples(metric, route: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.labels.get("route") == route and not sample.name.endswith("_created")
    }


def test_a_flushed_tally_reads_as_observing_each_request_would():
    latencies = [0.0004, 0.001, 0.001, 0.0031, 0.02, 0.7, 2.5, 9.0]  # bucket edges and +Inf included
    reference = Histogram("ehc_http_request_seconds", "HTTP request latency", ["route"],
                          buckets=LATENCY_BUCKETS_S, registry=CollectorRegistry())  # fmt: skip
    tally = RequestTally()
    for elapsed in latencies:
        tally.record("POST", ROUTE, 200, elapsed)
        reference.labels(ROUTE).observe(elapsed)
    tally.record("POST", ROUTE, 400, 0.002)
    reference.labels(ROUTE).observe(0.002)

    assert samples(HTTP_LATENCY, ROUTE) == {}  # nothing reaches the metrics before a flush
    tally.flush()
    assert samples(HTTP_LATENCY, ROUTE) == samples(reference, ROUTE)
    counted = samples(HTTP_REQUESTS, ROUTE)
    assert counted[("ehc_http_requests_total", (("method", "POST"), ("route", ROUTE), ("status", "200")))] == 8
    assert counted[("ehc_http_requests_total", (("method", "POST"), ("route", ROUTE), ("status", "400")))] == 1

    tally.flush()  # a second flush adds nothing more
    assert samples(HTTP_LATENCY, ROUTE) == samples(reference, ROUTE)
