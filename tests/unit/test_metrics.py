"""Prometheus text exposition, made by prometheus-client."""

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oonibackend.metrics import CONTENT_TYPE, Metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition (it must parse) into {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_counters_gauges_and_cumulative_histogram_buckets():
    m = Metrics("t")
    m.inc("reqs_total", help="Requests", route="/a")
    m.inc("reqs_total", 2, route="/a")
    m.set("pending", lambda: 7, help="Pending")
    for s in (0.0005, 0.003, 0.003, 20.0):
        m.observe("lat", s, help="Latency", route="/a")
    text = m.render()
    assert "# HELP t_reqs_total Requests\n# TYPE t_reqs_total counter\n" in text
    assert 't_reqs_total{route="/a"} 3.0\n' in text
    assert "# HELP t_pending Pending\n# TYPE t_pending gauge\nt_pending 7.0\n" in text
    assert "# HELP t_lat Latency\n# TYPE t_lat histogram\n" in text
    assert 't_lat_bucket{le="0.001",route="/a"} 1.0\n' in text
    assert 't_lat_bucket{le="0.0025",route="/a"} 1.0\n' in text
    assert 't_lat_bucket{le="0.005",route="/a"} 3.0\n' in text
    assert 't_lat_bucket{le="10.0",route="/a"} 3.0\n' in text
    assert 't_lat_bucket{le="+Inf",route="/a"} 4.0\n' in text
    assert 't_lat_count{route="/a"} 4.0\n' in text
    assert 't_lat_sum{route="/a"} 20.0065\n' in text
    assert text.count("t_lat_bucket{") == 14  # the 13 buckets and +Inf
    assert "_created" not in text
    assert m.value("reqs_total", route="/a") == 3
    assert m.value("reqs_total", route="/b") == 0 and m.value("nope") == 0
    assert m.content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(text)[("t_reqs_total", (("route", "/a"),))] == 3


def test_a_counter_named_without_total_is_exposed_with_it():
    m = Metrics("t")
    m.inc("x", help="X")
    text = m.render()
    assert "# TYPE t_x_total counter\nt_x_total 1.0\n" in text
    assert m.value("x") == 1


def test_label_values_are_escaped():
    m = Metrics("t")
    m.inc("x_total", route='a"b\\c\nd')
    text = m.render()
    assert 't_x_total{route="a\\"b\\\\c\\nd"} 1.0' in text
    assert samples(text)[("t_x_total", (("route", 'a"b\\c\nd'),))] == 1


def test_labels_are_sorted_and_order_of_the_call_does_not_matter():
    m = Metrics("t")
    m.inc("r_total", status="200", route="/a")
    m.inc("r_total", route="/a", status="200")
    m.inc("r_total", route="/a", status=200)
    assert 't_r_total{route="/a",status="200"} 3.0\n' in m.render()


def test_gauges_values_and_callables():
    m = Metrics("t")
    n = [1]
    m.set("live", lambda: n[0], help="Live")
    n[0] = 5
    assert "t_live 5.0\n" in m.render()  # read at scrape time
    m.set("size", 3, help="Size", kind="a")
    m.set("size", 4, kind="a")
    assert 't_size{kind="a"} 4.0\n' in m.render()
    m.set("live", 9)  # a value replaces the callable
    assert "t_live 9.0\n" in m.render()


def test_a_failing_gauge_callable_is_left_out_of_the_scrape():
    m = Metrics("t")
    m.set("bad", lambda: 1 / 0, help="Bad")
    m.set("none", lambda: None)
    m.set("good", lambda: 2)
    m.inc("c_total")
    text = m.render()
    assert "t_good 2.0\n" in text and "t_c_total 1.0\n" in text
    assert "\nt_bad " not in text and "\nt_none " not in text
    samples(text)  # still parses


def test_metrics_objects_are_independent():
    a, b = Metrics("t"), Metrics("t")
    a.inc("x_total")
    a.observe("lat", 0.1)
    b.inc("x_total", 5)
    b.observe("lat", 0.1)  # same names: no DuplicateTimeseries across objects
    assert a.value("x_total") == 1 and b.value("x_total") == 5
    assert "t_x_total 1.0\n" in a.render() and "t_x_total 5.0\n" in b.render()


def test_different_labels_from_the_first_use_do_not_fail_the_caller():
    m = Metrics("t")
    m.inc("f_total", kind="a")
    m.inc("f_total", other="b")  # a caller's bug: counted with kind=""
    m.inc("f_total")
    text = m.render()
    assert 't_f_total{kind="a"} 1.0\n' in text and 't_f_total{kind=""} 2.0\n' in text


def test_one_name_one_kind():
    m = Metrics("t")
    m.inc("x_total")
    with pytest.raises(ValueError):
        m.set("x_total", 1)


def test_concurrent_increments_are_all_counted():
    m = Metrics("t")

    def work() -> None:
        for i in range(2000):
            m.inc("n_total", route=str(i % 3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(m.value("n_total", route=str(r)) for r in range(3)) == 8000
