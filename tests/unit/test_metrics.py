"""The Prometheus text the exporter serves: well formed, counters and histograms right,
state read from collectors at scrape time, a failing collector only loses its gauges."""

from __future__ import annotations

import re

import pytest

from imapproxy.metrics import Metrics, Sample

VALUE = r'"(?:[^"\\\n]|\\.)*"'
LINE = re.compile(rf"imapproxy_[a-z_]+(\{{[a-z]+={VALUE}(,[a-z]+={VALUE})*\}})? [-+0-9.eInf]+")


def _sample_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_every_line_is_prometheus_text() -> None:
    metrics = Metrics()
    metrics.add_collector(lambda: {"accounts": [((("state", 'on"li\\ne\nx'),), 2)]})
    text = metrics.render()
    assert text.endswith("\n")
    for line in _sample_lines(text):
        assert LINE.fullmatch(line), line
    assert 'imapproxy_accounts{state="on\\"li\\\\ne\\nx"} 2' in text
    assert "# TYPE imapproxy_accounts gauge" in text


def test_counters_only_go_up() -> None:
    metrics = Metrics()
    metrics.client_bytes.inc(10)
    metrics.client_bytes.inc(-5)
    metrics.client_bytes.inc(2.5)
    assert "imapproxy_client_sent_bytes_total 12.5" in metrics.render()


def test_histogram_buckets_are_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.2, 0.2, 100.0):
        metrics.sync_seconds.observe(seconds)
    text = metrics.render()
    assert 'imapproxy_sync_seconds_bucket{le="0.005"} 1' in text
    assert 'imapproxy_sync_seconds_bucket{le="0.25"} 3' in text
    assert 'imapproxy_sync_seconds_bucket{le="60"} 3' in text
    assert 'imapproxy_sync_seconds_bucket{le="+Inf"} 4' in text
    assert "imapproxy_sync_seconds_count 4" in text
    assert "imapproxy_sync_seconds_sum 100.403" in text


def test_timing_skips_failures() -> None:
    metrics = Metrics()
    with metrics.replay_seconds.time():
        pass
    with pytest.raises(RuntimeError), metrics.replay_seconds.time():
        raise RuntimeError("link lost")
    assert metrics.replay_seconds.count == 1


def test_state_is_read_at_each_scrape_and_a_broken_collector_is_left_out() -> None:
    metrics = Metrics()
    sessions = [0]

    def working() -> dict[str, list[Sample]]:
        return {"sessions": [((), sessions[0])]}

    def broken() -> dict[str, list[Sample]]:
        raise RuntimeError("store closed")

    metrics.add_collector(broken)
    metrics.add_collector(working)
    assert "imapproxy_sessions 0" in metrics.render()
    sessions[0] = 3
    assert "imapproxy_sessions 3" in metrics.render()
    metrics.remove_collector(working)
    assert "imapproxy_sessions" not in metrics.render()
