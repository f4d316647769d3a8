"""Sample objects for the national fleet: AICenters, GPUQuotas, tenant namespaces, example GPUJobs.

``fleet_manifests(fleet)`` turns any (scaled, filtered) :class:`aicenter_testbed.fleet.Fleet` into the
AICenters and GPUQuotas that describe it, so simulations and tests apply the same objects the
samples show. ``python -m aicenter_testbed.generate --only samples`` writes ``manifests/samples/``;
``python -m aicenter_testbed.samples --print`` writes a (scaled) fleet to stdout::

    python -m aicenter_testbed.samples --print --scale 0.001 --namespaces | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

from aicenter.api import (
    API_VERSION,
    GANG_ALL_OR_NOTHING,
    GANG_INDEPENDENT,
    KIND_AICENTER,
    KIND_GPUJOB,
    KIND_GPUQUOTA,
    LABEL_CENTER,
    LABEL_QUOTA,
    LABEL_REPLICA,
    PLACEMENT_BINPACK,
    TOPOLOGY_PREFERRED,
    TOPOLOGY_REQUIRED,
)
from aicenter_testbed.fleet import LABEL_CLIQUE, LABEL_RACK, LABEL_ZONE, Center, Fleet, QuotaSpec, load_fleet
from aicenter_testbed.sim.nodes import KWOK_TOLERATION

Manifest = dict[str, Any]

LABEL_OWNER = "aicenter.dev/owner"
LABEL_REGION = "topology.kubernetes.io/region"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def center_manifest(center: Center) -> Manifest:
    """The AICenter of one fleet centre: nodes labelled aicenter.dev/center=<name>, its GPU classes."""
    labels = {}
    if center.owner:
        labels[LABEL_OWNER] = center.owner
    if center.region:
        labels[LABEL_REGION] = center.region
    meta: Manifest = {"name": center.name}
    if labels:
        meta["labels"] = labels
    products = center.products()
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_AICENTER,
        "metadata": meta,
        "spec": {
            "nodeSelector": {"matchLabels": {LABEL_CENTER: center.name}},
            "gpuClasses": [{"name": cls, "product": products[cls]} for cls in sorted(products)],
            "placementPolicy": PLACEMENT_BINPACK,
        },
    }


def quota_manifest(center: Center, quota: QuotaSpec) -> Manifest:
    """The GPUQuota of one fleet quota; it serves the namespace named like the quota."""
    classes = sorted(center.gpus_by_class())
    spec: Manifest = {"center": center.name}
    if quota.cohort:
        spec["cohort"] = quota.cohort
    spec["namespaceSelector"] = {
        "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": [quota.name]}]
    }
    spec["resources"] = [
        {
            "gpuClass": cls,
            "guaranteed": quota.guaranteed.get(cls, 0),
            "limit": max(quota.limit.get(cls, 0), quota.guaranteed.get(cls, 0)),
        }
        for cls in classes
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_GPUQUOTA,
        "metadata": {"name": quota.name, "labels": {LABEL_CENTER: center.name}},
        "spec": spec,
    }


def namespace_manifest(center: Center, quota: QuotaSpec) -> Manifest:
    """The tenant namespace served by ``quota`` (named like it)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": quota.name, "labels": {LABEL_CENTER: center.name, LABEL_QUOTA: quota.name}},
    }


def _check_names(fleet: Fleet) -> None:
    seen: dict[str, str] = {}
    for c in fleet.centers:
        for q in c.quotas:
            if q.name in seen:
                raise ValueError(
                    f"quota {q.name!r} appears in centres {seen[q.name]!r} and {c.name!r}; GPUQuotas are"
                    " cluster-scoped and name their namespace, so names must be unique across the fleet"
                )
            seen[q.name] = c.name


def namespace_manifests(fleet: Fleet) -> list[Manifest]:
    """One tenant Namespace per quota of the fleet."""
    _check_names(fleet)
    return [namespace_manifest(c, q) for c in fleet.centers for q in c.quotas]


def fleet_manifests(fleet: Fleet, *, namespaces: bool = False) -> list[Manifest]:
    """AICenters then GPUQuotas describing ``fleet`` (Namespaces first when ``namespaces``)."""
    _check_names(fleet)
    out = namespace_manifests(fleet) if namespaces else []
    out += [center_manifest(c) for c in fleet.centers]
    out += [quota_manifest(c, q) for c in fleet.centers for q in c.quotas]
    return out


# --------------------------------------------------------------------------------------------------
# Example jobs (namespaces and classes from the korea-national-fleet preset)


def _job(
    name: str,
    namespace: str,
    spec: Manifest,
    image: str,
    command: list[str],
    *,
    comment: str,
    env: list[Manifest] | None = None,
) -> tuple[str, Manifest]:
    container: Manifest = {"name": "main", "image": image, "command": command}
    if env:
        container["env"] = env
    template = {
        "metadata": {"labels": {"app.kubernetes.io/name": name}},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }
    return comment, {
        "apiVersion": API_VERSION,
        "kind": KIND_GPUJOB,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "template": template},
    }


def example_jobs() -> dict[str, tuple[str, Manifest]]:
    """File name → (comment, GPUJob) for ``manifests/samples/jobs/``."""
    pytorch = "nvcr.io/nvidia/pytorch:25.01-py3"

    def torchrun(nodes: int, gpus: int) -> list[str]:
        return ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={gpus}"]

    return {
        "inference-8gpu.yaml": _job(
            "llm-inference",
            "universities",
            {
                "gpuClass": "B200",
                "replicas": 1,
                "gpusPerReplica": 8,
                "priority": 100,
                "preemptible": False,
            },
            "vllm/vllm-openai:v0.8.5",
            ["vllm", "serve", "/models/llama-3.1-70b-instruct", "--tensor-parallel-size", "8"],
            comment="One 8-GPU B200 replica serving a model for the universities quota (national AI\n"
            "centre); quota is omitted: exactly one GPUQuota selects the namespace. High priority,\n"
            "not preemptible.",
        ),
        "b200-gang-4x8-rack.yaml": _job(
            "perception-finetune",
            "autonomous-driving",
            {
                "quota": "autonomous-driving",
                "gpuClass": "B200",
                "replicas": 4,
                "gpusPerReplica": 8,
                "gang": {"policy": GANG_ALL_OR_NOTHING},
                "topology": {"key": LABEL_RACK, "mode": TOPOLOGY_PREFERRED},
                "priority": 50,
                "backoffLimit": 2,
                "activeDeadlineSeconds": 86400,
            },
            pytorch,
            [*torchrun(4, 8), "train.py", "--config", "perception.yaml"],
            comment="A 4 x 8 B200 gang (32 GPUs) at Hyundai: all four replicas start together or none do,\n"
            "in one rack when one has room (Preferred), else across racks.",
        ),
        "gb200-nvl72-clique-18x4.yaml": _job(
            "fab-vision-nvl72",
            "semiconductor-fab-ai",
            {
                "gpuClass": "GB200",
                "replicas": 18,
                "gpusPerReplica": 4,
                "gang": {"policy": GANG_ALL_OR_NOTHING},
                "topology": {"key": LABEL_CLIQUE, "mode": TOPOLOGY_REQUIRED},
                "priority": 10,
            },
            pytorch,
            [*torchrun(18, 4), "train.py", "--config", "fab-vision.yaml"],
            comment="A whole GB200 NVL72 domain at Samsung: 18 nodes x 4 GPUs = 72 GPUs that must share one\n"
            "NVLink clique (Required). A clique holds 18 nodes, so a Required clique job has at most 18\n"
            "replicas of 4 GPUs.",
        ),
        "gb200-training-64x4-zone.yaml": _job(
            "hull-foundation-pretrain",
            "shipbuilding",
            {
                "quota": "shipbuilding",
                "gpuClass": "GB200",
                "replicas": 64,
                "gpusPerReplica": 4,
                "gang": {"policy": GANG_ALL_OR_NOTHING},
                "topology": {"key": LABEL_ZONE, "mode": TOPOLOGY_REQUIRED},
                "priority": 10,
                "backoffLimit": 5,
            },
            pytorch,
            [*torchrun(64, 4), "pretrain.py", "--config", "hull-foundation.yaml"],
            comment="A 64 x 4 GB200 training gang (256 GPUs, 3.6 NVL72 domains) at Naver Cloud: too large\n"
            "for one clique, so it requires one zone instead. gpuClass is needed: the quota has B200\n"
            "and GB200.",
        ),
        "independent-sweep.yaml": _job(
            "hparam-sweep",
            "startups",
            {
                "replicas": 16,
                "gpusPerReplica": 1,
                "gang": {"policy": GANG_INDEPENDENT},
                "priority": 0,
                "preemptible": True,
                "ttlSecondsAfterFinished": 3600,
            },
            pytorch,
            ["python", "sweep.py", "--trial=$(TRIAL)"],
            env=[
                {
                    "name": "TRIAL",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{LABEL_REPLICA}']"}},
                }
            ],
            comment="A 16-trial hyper-parameter sweep, one B200 each, for the startups quota: Independent\n"
            "replicas start as GPUs free up; low priority and preemptible, deleted an hour after finishing.\n"
            "Each trial reads its index from the aicenter.dev/replica pod label.",
        ),
    }


def testbed_jobs() -> list[Manifest]:
    """The example jobs as the test bed runs them: each template also tolerates the taint its kwok
    nodes carry (a real cluster's nodes have no such taint; the samples apply there as they are)."""
    out = []
    for _, job in example_jobs().values():
        job = copy.deepcopy(job)
        pod = job["spec"]["template"]["spec"]
        pod["tolerations"] = [*pod.get("tolerations", []), dict(KWOK_TOLERATION)]
        out.append(job)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m aicenter_testbed.samples", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--print", dest="print_", action="store_true", help="write a fleet's manifests to stdout")
    p.add_argument(
        "--preset", default="korea-national-fleet", help="fleet preset name or YAML path (--print)"
    )
    p.add_argument("--scale", type=float, default=1.0, help="scale the fleet (--print)")
    p.add_argument("--centers", default="", help="comma-separated centre names (--print)")
    p.add_argument("--namespaces", action="store_true", help="include tenant Namespaces (--print)")
    p.add_argument("--jobs", action="store_true", help="write the example jobs as the test bed runs them")
    args = p.parse_args(argv)
    from aicenter_testbed.fleet import scale_fleet
    from aicenter_testbed.yamlio import dump_all

    if args.jobs:
        sys.stdout.write(dump_all(testbed_jobs()))
        return 0
    if not args.print_:
        p.error("nothing to do: --print writes a fleet's manifests, --jobs the example jobs")

    fleet = scale_fleet(
        load_fleet(args.preset), args.scale, [c for c in args.centers.split(",") if c] or None
    )
    sys.stdout.write(dump_all(fleet_manifests(fleet, namespaces=args.namespaces)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
