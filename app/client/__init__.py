"""The deploy command line's side of the API (issue 18 section 3): ``keystone login``,
``keystone deploy``, ``keystone status``. Standard library HTTP only; it never loads the
server application."""
