"""Management keys: one ed25519 keypair per organisation, Keystone's SSH identity.

Created on first need (adding a provider or a server, or opening the servers
page, which shows the public key to paste on a custom server). The private key
is stored encrypted (``Organisation.management_key_private`` is an
EncryptedText column) and only ever leaves the database inside the worker, to
authenticate; it is never written to a server or a log.

The key is created with a conditional UPDATE (``WHERE management_key_public IS
NULL``), so two requests racing on a new organisation cannot end up with two
different keys, one of which was already uploaded to Hetzner.
"""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import Organisation


def ensure_management_key(org: Organisation) -> str:
    """Return the organisation's management public key, creating the keypair once."""
    if org.management_key_public and org.management_key_private:
        return org.management_key_public
    from app.remote.keys import generate_ed25519

    private, public, fingerprint = generate_ed25519(comment=f"keystone-{org.slug}"[:60])
    db.session.execute(
        sa.update(Organisation)
        .where(Organisation.id == org.id, Organisation.management_key_public.is_(None))
        .values(management_key_public=public, management_key_private=private,
                management_key_fingerprint=fingerprint)
        .execution_options(synchronize_session=False))
    db.session.commit()
    db.session.refresh(org)
    return org.management_key_public
