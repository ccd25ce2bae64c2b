"""The DNS side of the operator: SOA probes, serial status, NOTIFY and the NOTIFY relay.

It may use `secondary_dns.api`, `secondary_dns.render` and `secondary_dns.metrics`,
never the Kubernetes layers (import-linter keeps it so): everything here works on
addresses, names and keys, and can be tested against real name servers alone.
"""
