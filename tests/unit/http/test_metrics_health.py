"""/metrics parsed as Prometheus text and checked against the store's rows; /health and /ready."""

from __future__ import annotations

import socket

from prometheus_client.parser import text_string_to_metric_families

from listeners.http.context import HttpContext
from tests.unit.http.support import client


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_match_the_store(env) -> None:
    r = env.client.get("/metrics")  # no authentication on loopback by default
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)
    assert m[("cds_instances_received_total", ())] == 3  # 2 instances, one received twice
    assert m[("cds_instances_received_bytes_total", ())] == 1500
    assert m[("cds_instances_refused_total", (("reason", "cannot_parse"),))] == 1
    assert m[("cds_jobs", (("kind", "case"), ("state", "dead")))] == 1
    assert m[("cds_jobs", (("kind", "case"), ("state", "done")))] == 1
    assert m[("cds_outbox_depth", (("destination", "fhir"), ("state", "dead")))] == 1
    assert m[("cds_model_inference_seconds_count", (("model", "m1"),))] == 1
    assert m[("cds_model_inference_seconds_bucket", (("le", "0.25"), ("model", "m1")))] == 0
    assert m[("cds_model_inference_seconds_bucket", (("le", "0.5"), ("model", "m1")))] == 1
    assert ("cds_reviews_total", (("model", "m1"), ("outcome", "accepted"))) not in m
    with env.store.tx() as con:
        con.execute("INSERT INTO reviews(result_id, model, outcome, reviewer, created_at) VALUES (1, 'm1', 'accepted', 'dr', 1.0)")
    env.store.requeue_job(env.ids["dead_job"])
    m2 = _samples(env.client.get("/metrics").text)  # read at scrape time: the requeue shows at once
    assert m2[("cds_jobs", (("kind", "case"), ("state", "queued")))] == 1
    assert m2[("cds_job_oldest_queued_age_seconds", (("kind", "case"),))] >= 0
    assert ("cds_jobs", (("kind", "case"), ("state", "dead"))) not in m2
    assert m2[("cds_reviews_total", (("model", "m1"), ("outcome", "accepted")))] == 1


def test_latency_histogram_from_stable_to_delivered(env) -> None:
    con = env.store._con()
    con.execute("UPDATE studies SET stable_at=100.0")
    con.execute("UPDATE results SET study_uid='2.25.900'")
    con.execute("UPDATE outbox SET state='delivered', delivered_at=112.5, meta=json_set(meta, '$.job_id', ?)",
                (env.ids["done_job"],))
    m = _samples(env.client.get("/metrics").text)
    assert m[("cds_model_latency_seconds_sum", (("model", "m1"),))] == 12.5
    assert m[("cds_model_latency_seconds_bucket", (("le", "5.0"), ("model", "m1")))] == 0
    assert m[("cds_model_latency_seconds_bucket", (("le", "15.0"), ("model", "m1")))] == 1
    act = env.store.model_activity("m1")
    assert act.latency_p50_s == 12.5 and act.inference_p50_s == 0.3 and act.n_by_status == {"ok": 1}


def test_health_and_ready(env) -> None:
    assert env.client.get("/health").json()["alive"] is True
    ok = env.client.get("/ready")
    assert ok.status_code == 200 and ok.json()["ready"], ok.text


def test_ready_names_a_store_that_cannot_be_read(env) -> None:
    env.store.path.write_bytes(b"this is not a database" * 400)
    for suffix in ("-wal", "-shm"):
        env.store.path.with_name(env.store.path.name + suffix).unlink(missing_ok=True)
    r = env.client.get("/ready")
    assert r.status_code == 503 and any(x.startswith("store: store cannot be read") for x in r.json()["reasons"]), r.text


def test_ready_names_low_space_and_a_pacs_that_is_down(env, tmp_path) -> None:
    from listeners.http.health import peer_probes

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = env.settings.model_copy(update={"pacs_host": "127.0.0.1", "pacs_port": port, "pacs_ae_title": "PACS",
                                               "ready_min_free_bytes": 1 << 62})
    ctx = HttpContext(settings, env.store)
    assert set(peer_probes(ctx)) == {"pacs"}
    with client(ctx) as c:
        r = c.get("/ready")
    body = r.json()
    assert r.status_code == 503 and not body["checks"]["pacs"]["ok"] and not body["checks"]["spool_space"]["ok"]
    assert any(x.startswith("pacs:") for x in body["reasons"]) and body["checks"]["store"]["ok"]
