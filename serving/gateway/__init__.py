"""``cutover gateway``: the one endpoint clients call, in front of every serving revision.

``app`` is the HTTP server and the wiring: it authenticates and rate-limits with ``keys``, picks a
revision with ``routing`` (the traffic table the operator writes, kept as a ``RoutingTable``),
sends the request with ``proxy`` (attempts, retries, circuit breakers) over ``upstream`` (pooled
keep-alive connections), copies it to shadow revisions with ``mirror`` and compares their answers
with ``shadow``, and counts all of it in ``metrics``. ``watch`` keeps the routes and keys current
from the Kubernetes API (``cutover.serving.kube``); ``main`` runs it all and drains on SIGTERM.
"""
