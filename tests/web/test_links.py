"""Every link a signed-in person can reach from the dashboard opens a page: none is "#",
none is broken (issue 14: a walk found every operation link dead)."""
import re
from collections import deque
from urllib.parse import urljoin, urlparse

from app.extensions import db
from app.models.enums import ArtifactStatus
from tests.factories import build_org

HREF = re.compile(r'<a\b[^>]*\bhref="([^"]*)"', re.I)
MAX_PAGES = 80


def test_every_link_reachable_from_the_dashboard_works(app, client, auth):
    g = build_org()
    g.artifact.status = ArtifactStatus.READY
    g.artifact.image_digest = "sha256:" + "c" * 64
    g.environment.current_artifact = g.artifact
    db.session.commit()
    auth.login(email="b@example.com")
    seen, queue, checked, visited = {"/"}, deque(["/"]), 0, set()
    while queue and checked < MAX_PAGES:
        path = queue.popleft()
        resp = client.get(path)
        checked += 1
        visited.add(path)
        assert resp.status_code in (200, 302), f"{path} answered {resp.status_code}"
        if resp.status_code != 200 or not resp.mimetype == "text/html":
            continue
        for href in HREF.findall(resp.get_data(as_text=True)):
            assert href and href != "#", f"{path} has a link to {href!r}"
            if href.startswith("#"):
                continue  # an anchor on the same page
            url = urlparse(urljoin("http://localhost" + path, href))
            if url.netloc != "localhost":
                continue  # the app's own address (Live at ...), not Keystone's pages
            target = url.path + (f"?{url.query}" if url.query else "")
            if target not in seen:
                seen.add(target)
                queue.append(target)
    assert checked > 10, f"the walk only reached {checked} pages"
    # The main pages are among them (issue 14): each kind was opened and its links checked.
    kinds = {"operations list": r"/operations", "operation": r"/operations/\d+",
             "environment": r"/environments/\d+", "service": r"/services/\d+",
             "server": r"/servers/\d+", "application": r"/applications/\d+",
             "wizard": r"/onboarding/"}
    missing = [k for k, pattern in kinds.items()
               if not any(re.fullmatch(pattern, p.split("?")[0]) for p in visited)]
    assert not missing, f"the walk never reached: {missing}"
