"""What tests, the demo and ``hack/`` share to drive the real parts: waiting for a condition
(``waiting``), free loopback ports (``ports``), kubectl bound to one kubeconfig (``kubectl``) and a
real Prometheus process (``prometheus``).

``hack/`` imports these too (``python -m hack.demo`` runs from the repository root, where ``tests``
and ``hack`` are packages; pytest puts the root on ``sys.path`` through ``pythonpath`` in
pyproject.toml), so nothing here may import pytest.
"""
