"""Server provisioning: the ``server_provision`` operation and its plan.

``commands`` builds every shell line (pure), ``files`` renders every config file
Keystone writes (pure), ``plan`` compares facts read from the server with the
desired state and emits commands only where they differ (pyinfra style: a
second run changes nothing and says so, step by step), ``handlers`` is the
operation handler the worker runs. Only ``handlers`` and ``host`` touch SSH.
"""
