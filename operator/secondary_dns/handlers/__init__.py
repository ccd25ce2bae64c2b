"""The operator's I/O glue: kopf events in, the Controller decides what they affect.

Layering (import-linter): may use k8s, dns, status, render and api; the
decisions themselves live in the pure layers (render: what to build, status:
what the status says).
"""
