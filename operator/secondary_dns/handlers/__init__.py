"""Thin kopf glue: every handler hands its event to the Reconciler."""
