"""Operations on single services and their slices: where driver plans are run.

Drivers (:mod:`app.drivers`) render and plan; this package runs their plans
through the operations engine and knows no driver by name:

* :mod:`app.services_ops.steps`: building blocks (pull, write a compose
  project, start, wait healthy, firewall) and :func:`~app.services_ops.steps.run_plan`,
  which turns a driver's :class:`app.drivers.plan.StepPlan` list into recorded steps;
* :mod:`app.services_ops.deploy`: ``service_deploy`` (first deploy, redeploy, update);
* :mod:`app.services_ops.slices`: ``slice_provision`` and ``slice_configure``;
* :mod:`app.services_ops.create`: a new service row from its driver's form fields;
* :mod:`app.services_ops.updates`: checking a service's track tag for a newer digest.

The environment deploy (Laravel replicas, cutover) stays in :mod:`app.deploys`
and uses the building blocks from here. See docs/architecture.md.
"""
