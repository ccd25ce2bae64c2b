"""The in-pod agent: applies checked configuration to the engine and reports readiness.

Layering (import-linter): may use k8s, dns, render and api; never handlers.
"""
