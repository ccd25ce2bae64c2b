"""secondary-dns-operator: managed secondary authoritative DNS on Kubernetes."""

__version__ = "0.1.0"
