"""Every `#N` operation link opens that operation: no page renders href="#" (issue 14, defect 1)."""
import re

from app.extensions import db
from app.models import Operation
from app.models.enums import OperationKind
from tests.factories import build_org


def test_no_page_links_an_operation_to_hash(app, client, auth):
    g = build_org()
    ops = {
        "server": Operation(organisation_id=g.org.id, kind=OperationKind.SERVER_PROVISION,
                            target_type="server", target_id=g.server.id),
        "service": Operation(organisation_id=g.org.id, kind=OperationKind.SERVICE_DEPLOY,
                             target_type="service", target_id=g.postgres.id),
    }
    db.session.add_all(ops.values())
    db.session.commit()
    auth.login(email="b@example.com")
    pages = {
        "/": g.operation.id,
        "/operations": g.operation.id,
        f"/environments/{g.environment.id}": g.operation.id,
        f"/servers/{g.server.id}": ops["server"].id,
        f"/services/{g.postgres.id}": ops["service"].id,
    }
    for path, op_id in pages.items():
        resp = client.get(path)
        assert resp.status_code == 200, path
        html = resp.get_data(as_text=True)
        assert not re.search(r'href="#"', html), f"{path} renders href=\"#\""
        assert f'href="/operations/{op_id}"' in html, f"{path} does not link operation #{op_id}"
        # and the link opens the operation
        assert client.get(f"/operations/{op_id}").status_code == 200
