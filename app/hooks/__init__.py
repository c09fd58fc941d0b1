"""Push to deploy: per-environment deploy webhooks (issue 18 section 1).

* :mod:`app.hooks.signatures` -- which forge sent a request and whether its HMAC-SHA256
  signature is right (constant time), PURE.
* :mod:`app.hooks.service` -- make/rotate a hook, accept a verified push: deploy it, or
  coalesce it into the one follow-up deploy of the newest commit.
"""
