"""The kind cluster: one control plane and two workers on the offline node image.

No kindnetd, kube-proxy or CoreDNS images exist offline, so the cluster is created without them
and :func:`setup_network` does once what they would: a bridge CNI config per node on its
``podCIDR``, routes to the other nodes' pod CIDRs, and a DNAT of the ``kubernetes`` Service to the
API server, so in-cluster clients (the operator, the device plugin) work unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from aicenter_testbed import tools as tb
from aicenter_testbed.kind.cache import cache_root, workdir
from aicenter_testbed.kind.kindtool import kind_cmd
from aicenter_testbed.kind.node import NODE_IMAGE, etcd_image_tag
from aicenter_testbed.kind.shell import log, out, run

CLUSTER_NAME = os.environ.get("AICENTER_KIND_CLUSTER", "aicenter-e2e")
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CNI_CONF = "/etc/cni/net.d/10-aicenter-bridge.conflist"


def kubeconfig_path(name: str = CLUSTER_NAME) -> Path:
    return cache_root() / f"kubeconfig-{name}"


def cluster_config(etcd_tag: str | None = None) -> str:
    """kind's cluster config (``etcd_tag``: the etcd image's tag, read from the binary by default)."""
    return f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # no kindnetd, kube-proxy or CoreDNS images here: a bridge CNI config per node, routes between
  # nodes and one DNAT rule for the kubernetes Service are installed after creation
  # (aicenter_testbed.kind.cluster.setup_network)
  disableDefaultCNI: true
  kubeProxyMode: none
  podSubnet: {POD_SUBNET}
  serviceSubnet: {SERVICE_SUBNET}
nodes:
  - role: control-plane
  - role: worker
  - role: worker
kubeadmConfigPatches:
  - |
    kind: InitConfiguration
    skipPhases: ["preflight", "addon/kube-proxy", "addon/coredns"]
  - |
    kind: ClusterConfiguration
    etcd:
      local:
        imageTag: "{etcd_tag or etcd_image_tag()}"
"""


def cluster_exists(name: str = CLUSTER_NAME) -> bool:
    p = run(kind_cmd("get", "clusters"), check=False, capture=True)
    return name in p.stdout.split()


def kubectl(kubeconfig: Path, *args: str, **kw) -> str:
    return out([tb.KUBERNETES.path("kubectl"), f"--kubeconfig={kubeconfig}", *args], **kw)


def create_cluster(name: str = CLUSTER_NAME) -> Path:
    """Create the cluster (replacing one of the same name), wire its network; returns the kubeconfig."""
    kubeconfig = kubeconfig_path(name)
    if cluster_exists(name):
        log(f"deleting the existing cluster {name}")
        delete_cluster(name)
    t0 = time.monotonic()
    with workdir("cluster-") as w:
        cfg = w / "kind.yaml"
        cfg.write_text(cluster_config())
        log(f"kind create cluster {name} (1 control plane + 2 workers)")
        p = run(
            kind_cmd(
                "create",
                "cluster",
                "--name",
                name,
                "--image",
                NODE_IMAGE,
                "--config",
                str(cfg),
                "--kubeconfig",
                str(kubeconfig),
                "--retain",
            ),
            check=False,
            capture=True,
        )
        if p.returncode != 0:
            diag = _node_diagnostics(name)
            delete_cluster(name)
            raise RuntimeError(f"kind create cluster failed:\n{p.stderr[-3000:]}\n{diag}")
        log(f"kind create cluster: {time.monotonic() - t0:.0f}s")
    setup_network(kubeconfig, name)
    wait_nodes_ready(kubeconfig)
    log(f"cluster {name} ready in {time.monotonic() - t0:.0f}s; kubeconfig {kubeconfig}")
    return kubeconfig


def _node_diagnostics(name: str) -> str:
    lines = []
    for node in node_containers(name):
        p = run(
            [
                "docker",
                "exec",
                node,
                "journalctl",
                "--no-pager",
                "-n",
                "40",
                "-u",
                "kubelet",
                "-u",
                "containerd",
            ],
            check=False,
            capture=True,
        )
        lines.append(f"--- {node}\n{p.stdout[-3000:]}")
    return "\n".join(lines)


def node_containers(name: str = CLUSTER_NAME) -> list[str]:
    p = run(kind_cmd("get", "nodes", "--name", name), check=False, capture=True)
    return sorted(p.stdout.split())


def bridge_conflist(pod_cidr: str) -> dict:
    """A node's CNI config: bridge + host-local on its pod CIDR (masquerading) + portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "aicenter-kind",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def network_script(node: str, nodes: dict[str, tuple[str, str]], apiserver: str) -> str:
    """The shell run in ``node``: its CNI config, the Service DNAT, routes to the other pod CIDRs.

    ``nodes``: name → (InternalIP, podCIDR); ``apiserver``: the control plane's IP.
    """
    dnat = f"-d {KUBERNETES_SERVICE_IP}/32 -p tcp --dport 443 -j DNAT --to-destination {apiserver}:6443"
    script = [
        "set -e",
        f"cat > {CNI_CONF} <<'EOF'\n{json.dumps(bridge_conflist(nodes[node][1]), indent=2)}\nEOF",
        # the kubernetes Service without kube-proxy: DNAT its ClusterIP to the API server
        f"iptables -t nat -C PREROUTING {dnat} 2>/dev/null || iptables -t nat -A PREROUTING {dnat}",
        f"iptables -t nat -C OUTPUT {dnat} 2>/dev/null || iptables -t nat -A OUTPUT {dnat}",
    ]
    for other, (ip, cidr) in sorted(nodes.items()):
        if other != node:
            script.append(f"ip route replace {cidr} via {ip}")
    return "\n".join(script)


def setup_network(kubeconfig: Path, name: str = CLUSTER_NAME) -> None:
    """What kindnetd and kube-proxy would do, once: per-node bridge CNI, routes, the API Service VIP."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json"))["items"]
    info = {}
    for n in nodes:
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        info[n["metadata"]["name"]] = (
            ip,
            n["spec"].get("podCIDR") or _wait_pod_cidr(kubeconfig, n["metadata"]["name"]),
        )
    cp_ip = next(ip for node, (ip, _) in info.items() if node.endswith("control-plane"))
    for node in info:
        run(
            ["docker", "exec", "-i", node, "bash", "-s"],
            input=network_script(node, info, cp_ip),
            capture=True,
        )
    log("network: bridge CNI per node, pod routes between nodes, kubernetes Service DNAT to " + cp_ip)


def _wait_pod_cidr(kubeconfig: Path, node: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cidr = kubectl(kubeconfig, "get", "node", node, "-o", "jsonpath={.spec.podCIDR}").strip()
        if cidr:
            return cidr
        time.sleep(1)
    raise RuntimeError(f"node {node} got no podCIDR")


def wait_nodes_ready(kubeconfig: Path, timeout: float = 180) -> None:
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={int(timeout)}s")


def load_images(images: list[str], name: str = CLUSTER_NAME) -> None:
    """Load into the workers only: the operator, the device plugin and the workloads run there."""
    t0 = time.monotonic()
    workers = [n for n in node_containers(name) if not n.endswith("control-plane")]
    run(kind_cmd("load", "docker-image", "--name", name, "--nodes", ",".join(workers), *images), capture=True)
    log(f"loaded {', '.join(images)} into {', '.join(workers)} in {time.monotonic() - t0:.0f}s")


def delete_cluster(name: str = CLUSTER_NAME) -> None:
    run(
        kind_cmd("delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig_path(name))),
        check=False,
        capture=True,
    )
    kubeconfig_path(name).unlink(missing_ok=True)
