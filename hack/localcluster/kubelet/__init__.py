"""What a kubelet with containerd's CRI plugin does for a pod, for the pod runner.

Split as the real components split it: pure decisions (the OCI runtime spec,
environment, security context, status, backoff) and the I/O around them
(images in podman's local store, runc, volumes, probes). podrunner.py drives
them per pod; docs/local-cluster.md says what is and is not enforced.
"""
