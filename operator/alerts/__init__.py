"""AlertRule end to end: instances and their state machine, maintenance windows, the evaluator
over the analysis package's Prometheus client, notifications, the rendered PrometheusRule, and
the thin kopf loop that ties them together (one loop per AlertRule).
"""
