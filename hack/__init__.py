"""Development tooling, never shipped: the local data plane (``runner``), the whole stack on one
machine (``devstack``) and the demo (``demo``). Run its programs as modules from the repository
root (``python -m hack.demo``), where ``hack`` and ``tests`` are packages; tests import it the
same way."""
