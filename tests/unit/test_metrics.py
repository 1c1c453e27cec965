"""Prometheus text exposition."""

from oonibackend.metrics import Metrics


def test_counters_gauges_and_cumulative_histogram_buckets():
    m = Metrics("t")
    m.inc("reqs", help="Requests", route="/a")
    m.inc("reqs", 2, route="/a")
    m.set("pending", lambda: 7, help="Pending")
    for s in (0.0005, 0.003, 0.003, 20.0):
        m.observe("lat", s, help="Latency", route="/a")
    text = m.render()
    assert "# HELP t_reqs Requests\n# TYPE t_reqs counter\n" in text
    assert 't_reqs{route="/a"} 3' in text
    assert "t_pending 7" in text
    assert 't_lat_bucket{route="/a",le="0.001"} 1' in text
    assert 't_lat_bucket{route="/a",le="0.005"} 3' in text
    assert 't_lat_bucket{route="/a",le="10.0"} 3' in text
    assert 't_lat_bucket{route="/a",le="+Inf"} 4' in text
    assert 't_lat_count{route="/a"} 4' in text
    assert m.value("reqs", route="/a") == 3


def test_label_values_are_escaped():
    m = Metrics("t")
    m.inc("x", route='a"b\\c')
    assert 't_x{route="a\\"b\\\\c"} 1' in m.render()
