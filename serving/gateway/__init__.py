"""``cutover gateway``: the one endpoint clients call, in front of every serving revision.

``routing`` turns the traffic table the operator writes into a choice per request; ``keys``
holds API keys, tiers and rate limits; ``watch`` keeps both current from the Kubernetes API;
``app`` is the HTTP server that authenticates, routes, mirrors and proxies.
"""
