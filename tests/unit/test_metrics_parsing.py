"""Server metrics (issue 17 section 4), the pure parts: /proc and docker stats parsing,
the hourly roll-up's running mean, the SVG charts and the dashboard's thresholds."""
import datetime as dt
import xml.etree.ElementTree as ET

import pytest

from app import metrics
from app.models.metrics import ServerMetric
from app.shell import metrics_probe

PROBE = """==stat
cpu  1000 0 500 8000 500 0 0 0 0 0
==meminfo
MemTotal:        2048000 kB
MemFree:          100000 kB
MemAvailable:     512000 kB
Buffers:           10000 kB
Cached:           300000 kB
==loadavg
0.52 0.41 0.30 2/345 12345
==df
Filesystem     1024-blocks     Used Available Capacity Mounted on
overlay           41152736 37000000   2000000      95% /
==docker
keystone_web_12_1\t3.25%\t120.5MiB / 1.953GiB
keystone_pg_7_1\t0.10%\t1.2GiB / 1.953GiB
weird line without tabs
broken\t--\t-- / --
==stat2
cpu  1300 0 600 8500 600 0 0 0 0 0
"""


def test_the_probe_is_one_constant_command():
    text = metrics_probe().render()
    assert text.startswith("sh -c ") and "docker stats --no-stream" in text
    assert "/proc/stat" in text and "/proc/meminfo" in text and "/proc/loadavg" in text


def test_parse_probe_reads_every_section():
    s = metrics.parse_probe(PROBE)
    # busy went up 400 (user 300 + system 100) of 1000 jiffies (idle 500 + iowait 100 more).
    assert s.cpu_percent == pytest.approx(400 / 1000 * 100)
    assert s.mem_total_mb == pytest.approx(2000.0)
    assert s.mem_used_mb == pytest.approx((2048000 - 512000) / 1024, abs=0.1)
    assert s.load1 == 0.52 and s.load5 == 0.41 and s.load15 == 0.30
    assert s.disk_percent == pytest.approx(37000000 / 39000000 * 100, abs=0.01)
    assert s.containers == {"keystone_web_12_1": {"cpu": 3.25, "mem_mb": 120.5},
                            "keystone_pg_7_1": {"cpu": 0.1, "mem_mb": 1228.8},
                            "broken": {"cpu": 0.0, "mem_mb": 0.0}}


def test_a_probe_missing_a_section_is_refused():
    with pytest.raises(metrics.ProbeError):
        metrics.parse_probe(PROBE.replace("==meminfo", "==other"))
    with pytest.raises(metrics.ProbeError):
        metrics.parse_probe("")


def test_meminfo_without_memavailable_falls_back_to_free_buffers_cache():
    used, total = metrics.parse_meminfo(["MemTotal: 1024 kB", "MemFree: 256 kB",
                                         "Buffers: 0 kB", "Cached: 256 kB"])
    assert (used, total) == (0.5, 1.0)


@pytest.mark.parametrize("text,expected", [("0B", 0), ("1.5KiB", 1536), ("2MB", 2e6),
                                           ("1GiB", 1024 ** 3)])
def test_docker_sizes(text, expected):
    assert metrics.parse_size(text) == expected


def test_cpu_never_negative_or_over_100():
    assert metrics.cpu_percent("cpu 10 0 0 10 0", "cpu 10 0 0 10 0") == 0.0
    assert metrics.cpu_percent("cpu 0 0 0 0 0", "cpu 100 0 0 0 0") == 100.0


def sample(cpu, mem=1000.0, containers=None):
    return metrics.Sample(cpu_percent=cpu, mem_used_mb=mem, mem_total_mb=2000.0,
                          disk_used_gb=10.0, disk_total_gb=40.0, load1=1.0, load5=1.0,
                          load15=1.0, containers=containers or {})


def test_the_hour_row_is_the_running_mean_of_its_minutes():
    hour = ServerMetric(samples=0, containers={}, **{k: 0.0 for k in metrics.FIELDS})
    metrics.fold(hour, sample(10.0, containers={"a": {"cpu": 2.0, "mem_mb": 100.0}}))
    metrics.fold(hour, sample(30.0, mem=1500.0, containers={"a": {"cpu": 4.0, "mem_mb": 300.0},
                                                           "b": {"cpu": 6.0, "mem_mb": 60.0}}))
    assert hour.samples == 2
    assert hour.cpu_percent == 20.0 and hour.mem_used_mb == 1250.0
    # A container that appears halfway averages with the minutes it was absent (0).
    assert hour.containers == {"a": {"cpu": 3.0, "mem_mb": 200.0},
                               "b": {"cpu": 3.0, "mem_mb": 30.0}}


def test_minute_and_hour_buckets():
    t = dt.datetime(2026, 12, 2, 14, 37, 12, 5000)
    assert metrics.minute_of(t) == dt.datetime(2026, 12, 2, 14, 37)
    assert metrics.hour_of(t) == dt.datetime(2026, 12, 2, 14)


def test_sparkline_is_well_formed_svg_with_its_last_value():
    svg = str(metrics.sparkline([10, 50, 90], label="CPU", maximum=100.0))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and root.get("aria-label") == "CPU: 90.0%"
    line = root.find("{http://www.w3.org/2000/svg}polyline")
    points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    assert len(points) == 3 and points[0][0] == 0.0 and points[-1][0] == 240.0
    # Higher values are higher on screen (smaller y).
    assert points[0][1] > points[1][1] > points[2][1]
    assert "<script" not in svg and "on" not in "".join(root.attrib)  # nothing to run


def test_sparkline_without_data_and_with_a_hostile_label():
    svg = str(metrics.sparkline([], label='<b>"x"'))
    root = ET.fromstring(svg)
    assert root.find("{http://www.w3.org/2000/svg}polyline") is None
    assert "<b>" not in svg and "no data" in svg


def row(disk_used, mem_used):
    return ServerMetric(disk_used_gb=disk_used, disk_total_gb=100.0, mem_used_mb=mem_used,
                        mem_total_mb=1000.0)


def test_warnings_over_the_thresholds_only():
    assert metrics.warnings_for(None) == []
    assert metrics.warnings_for(row(90.0, 950.0)) == []  # at the threshold: not over
    warnings = metrics.warnings_for(row(91.0, 951.0))
    assert warnings[0].startswith("disk 91% full") and warnings[1].startswith("memory 95% used")
