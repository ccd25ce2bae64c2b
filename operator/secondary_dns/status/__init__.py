"""Status rules of both resources: pure functions from observations to the status the API stores.

No I/O and no clock: the handlers observe (the API, the probes, the agents) and
pass what they saw with the time `now`; these functions return the status, and
an unchanged world returns an identical status, so nothing is written.

- `conditions`: the one condition builder (`set_condition`).
- `server`: a SecondaryServer's status from its pods and rollout.
- `serial`: a zone's serial status from SOA probes and the agents' timers
  (RFC 1982 comparisons, RFC 2182 rules), with the memory kept between probes.
- `zone`: a Zone's whole status from the configuration path's observation and
  the serial evaluation, and the one `Ready` rule: an ordered chain of checks.

Layering (import-linter): status may use render and api, never dns or k8s.
The condition types and reasons are constants in `api.conditions`.
"""
