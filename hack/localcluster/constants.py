"""The local cluster's fixed addresses, ranges, ports and labels, in one place.

Every address here exists only inside the cluster's network namespace (or a
pod's namespace joined to it): the host never sees any of them.
"""

from __future__ import annotations

# ---- the control plane ------------------------------------------------------

API_PORT = 6443
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
# The apiserver advertises an address that only exists on the namespace's
# loopback; without one it looks for a default route, and there is none. Pods
# reach the API here too: their 127.0.0.1 is their own.
CONTROL_PLANE_ADDRESS = "10.250.0.1"
API_URL_FOR_PODS = f"https://{CONTROL_PLANE_ADDRESS}:{API_PORT}"
# Every kwok node's InternalIP: the nodes all are this one namespace, and this
# is its address (the pods' hostIP; where kube-proxy serves NodePorts).
NODE_ADDRESS = CONTROL_PLANE_ADDRESS
KWOK_SERVER_ADDRESS = "127.0.0.1:10247"

# ---- ranges -----------------------------------------------------------------

SERVICE_CIDR = "10.96.0.0/16"
# The `kubernetes` Service: the first address of the range (on the API
# server's certificate).
KUBERNETES_SERVICE_ADDRESS = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
FAILURE_ZONES = ("zone-a", "zone-b", "zone-c")
NODES_PER_ZONE = 2

# ---- pods and Services ------------------------------------------------------

# The pods the pod runner runs for real: every pod of the project, whatever
# made it (the operator's StatefulSets, the Helm chart's Deployments), carries
# the standard label `app.kubernetes.io/part-of: secondary-dns`; kwok is told
# to leave their status alone (docs/local-cluster.md, "Which pods").
RUNNER_POD_LABEL = "app.kubernetes.io/part-of"
RUNNER_POD_LABEL_VALUE = "secondary-dns"
RUNNER_POD_SELECTOR = f"{RUNNER_POD_LABEL}={RUNNER_POD_LABEL_VALUE}"
# The pods' default gateway (Calico's choice): link-local, so it can never
# clash with a pod, Service or primary address. It is a local address of the
# cluster namespace, which is what makes the host side of every veth answer
# the pods' ARP requests for it.
POD_GATEWAY = "169.254.1.1"
# An empty bridge in the cluster namespace carrying the route to SERVICE_CIDR:
# a connect() to a ClusterIP needs a route before kube-proxy's DNAT (in the
# output hook) sends the packet to a pod. A node has its default route for
# that; this namespace has no route out, and nothing sent to the bridge leaves
# it (it has no ports).
SERVICE_ROUTE_DEVICE = "services"
KUBE_PROXY_HEALTHZ_ADDRESS = "127.0.0.1:10256"
KUBE_PROXY_METRICS_ADDRESS = "127.0.0.1:10249"

# ---- the scenario (demo, end-to-end tests, benchmark) ---------------------

# Addresses on the cluster namespace's lo, outside the pod, Service and
# control-plane addresses.
PRIMARY_ADDRESS = "10.250.0.10"
# The NOTIFY relay's replicas while they run as processes (hack/localcluster/release.py).
RELAY_ADDRESSES = ("10.250.0.61", "10.250.0.62", "10.250.0.63")
