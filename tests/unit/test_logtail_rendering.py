"""Live container logs (issue 17 section 1), the pure parts: the docker logs command, the
gateway's access log as table rows, replica tags, escaping."""
import json

import pytest

from app import logtail
from app.shell import docker_logs


def test_docker_logs_command():
    assert docker_logs("ks-web-1").render() == "docker logs --follow --tail 200 -- ks-web-1"
    assert docker_logs("ks-web-1", tail=0, since="24h").render() == \
        "docker logs --follow --tail 0 --since 24h -- ks-web-1"


@pytest.mark.parametrize("name", ["-f", "a;id", "a b", "", "$(id)", "x" * 200])
def test_docker_logs_refuses_what_is_not_a_container_name(name):
    with pytest.raises(ValueError):
        docker_logs(name)


@pytest.mark.parametrize("since", ["2m", "1h; id", "-1"])
def test_docker_logs_since_is_allowlisted(since):
    with pytest.raises(ValueError):
        docker_logs("ks-web-1", since=since)


ACCESS = {"level": "info", "ts": 1764684000.25, "logger": "http.log.access.log0",
          "msg": "handled request",
          "request": {"method": "GET", "host": "shop.test", "uri": "/orders?x=<1>"},
          "status": 502, "duration": 0.01234}


def test_a_caddy_access_line_is_a_table_row():
    html = logtail.render_entry({"r": "ks-gw-1", "t": json.dumps(ACCESS)}, gateway=True)
    assert 'role="row"' in html and 'data-status="502"' in html and " err" in html
    assert '<span role="cell" data-col="path">/orders?x=&lt;1&gt;</span>' in html
    assert '<span role="cell" data-col="duration">12.3 ms</span>' in html
    assert "GET" in html and "14:00:00" in html


def test_other_gateway_lines_and_other_services_stay_text():
    other = json.dumps({"level": "info", "logger": "tls", "msg": "ready"})
    assert 'role="row"' not in logtail.render_entry({"r": "gw", "t": other}, gateway=True)
    # The web service's log is never read as an access log, even if a line looks like one.
    html = logtail.render_entry({"r": "ks-web-1", "t": json.dumps(ACCESS)}, gateway=False)
    assert 'role="row"' not in html and html.startswith('<div class="ln"')


def test_lines_are_tagged_with_their_replica_and_escaped():
    html = logtail.render_entry({"r": "ks-web-2", "t": "<script>x</script>", "e": "1"})
    assert html == ('<div class="ln err" data-replica="ks-web-2"><span class="replica-tag">'
                    '[ks-web-2]</span> &lt;script&gt;x&lt;/script&gt;</div>')


def test_parse_access_ignores_garbage():
    assert logtail.parse_access("not json") is None
    assert logtail.parse_access("{broken") is None
    assert logtail.parse_access("[1, 2]") is None
