"""The NOTIFY relay as its own Deployment: `secondary-dns relay` (docs/notify-relay.md)."""
