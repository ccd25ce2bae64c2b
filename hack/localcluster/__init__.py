"""A real, local Kubernetes control plane for tests and the demo.

The machine this project is developed on has no container runtime and no
cluster, so the project builds its own: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler from the published Go modules, and
kwok for fake nodes. Everything runs inside a private network namespace, the
only place where pod IPs exist.
"""
