"""The DNS side of the operator: SOA probes, NOTIFY, the NOTIFY relay, the agents' HTTP client.

I/O only: what the answers mean is decided in `secondary_dns.status`. It may use
`secondary_dns.api` and `secondary_dns.metrics`, never the Kubernetes layers nor
the status rules (import-linter keeps it so): everything here works on
addresses, names and keys, and can be tested against real name servers alone.
"""
