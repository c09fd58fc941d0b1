"""The environment page and its components (SPEC 19, phase 6): one blueprint,
``environments``, under ``/environments``.

* :mod:`.page`: the page (services, replicas, deploy button, scheduler placement,
  APP_KEY rotation, revealing a secret value) and :func:`render_page`.
* :mod:`.components`: the attachments and variables components' forms and contexts
  (``environments/_attachments.html``, ``environments/_variables.html``).
* :mod:`.attachments`: attach Postgres / Valkey / a domain, apply recommendations.
* :mod:`.variables`: add, edit and delete user variables.
* :mod:`.service_settings`: a Laravel service's deploy settings (its advanced section).
* :mod:`.replicas`: replicas per server (a ``service_scale``) and resource limits.

Each component is one HTMX target (``hx-target="this"``) returned by the actions
that change it (architecture example 9); without HTMX the whole page is rendered.
"""
from app.blueprints.environments import attachments, page, variables  # noqa: F401 (routes)
from app.blueprints.environments import commands, dotenv  # noqa: F401 (routes, issue 17)
from app.blueprints.environments import service_settings  # noqa: F401 (routes, issue 21)
from app.blueprints.environments import replicas  # noqa: F401 (routes, issue 20.2)
from app.blueprints.environments.blueprint import bp
from app.blueprints.environments.components import attachments_context, variables_context
from app.blueprints.environments.page import load_environment, render_page

__all__ = ["bp", "attachments_context", "load_environment", "render_page",
           "variables_context"]
