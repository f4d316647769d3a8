"""kwok Stage definitions: how simulated GPU nodes and the pods bound to them behave.

Stages (``kwok.x-k8s.io/v1alpha1``) are handed to the kwok controller through ``--config``. Each
selects objects with jq expressions and, after an optional delay, patches them (strategic merge on
the status subresource) or deletes them. The lifecycle simulated here:

Nodes (only those annotated ``kwok.x-k8s.io/node: fake``):
  * initialize — a node that is not Ready and carries no fault annotation becomes Ready (all
    kubelet conditions healthy, phase Running); this is also how a cleared fault recovers;
  * heartbeat — a Ready node without a fault gets its conditions' heartbeat times refreshed every
    few minutes (liveness itself comes from the node Lease, which kwok renews);
  * fault — a node annotated ``sim.aicenter.dev/fault: NotReady`` gets Ready=False and no heartbeat.

Pods (on those nodes):
  * running — a bound Pending pod becomes Running and Ready with running containers;
  * complete — a Running pod annotated ``sim.aicenter.dev/run-seconds: N`` becomes Succeeded N
    seconds after its startTime (Failed, exit code 1, if also ``sim.aicenter.dev/outcome: Failed``);
    pods without the annotation stay Running;
  * delete — a pod with a deletionTimestamp and no finalizers is deleted for good (kwok plays the
    kubelet's part of graceful deletion).
"""

from __future__ import annotations

from typing import Any

from aicenter_testbed.sim.tuning import HEARTBEAT_JITTER_MS, HEARTBEAT_MS, Tuning

STAGE_API = "kwok.x-k8s.io/v1alpha1"
CONFIG_API = "config.kwok.x-k8s.io/v1alpha1"

ANN_RUN_SECONDS = "sim.aicenter.dev/run-seconds"
ANN_OUTCOME = "sim.aicenter.dev/outcome"
ANN_FAULT = "sim.aicenter.dev/fault"
FAULT_NOT_READY = "NotReady"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"

# HEARTBEAT_MS, HEARTBEAT_JITTER_MS (imported above): kubelet-like status report frequency when
# Leases carry liveness; stretched on large fleets (aicenter_testbed.sim.tuning).


def _jq(key: str, operator: str, values: list[str] | None = None) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expr["values"] = values
    return {"jq": expr}


def _ann(name: str) -> str:
    return f'.metadata.annotations["{name}"]'


READY_STATUS = '.status.conditions.[] | select( .type == "Ready" ) | .status'


def _stage(
    name: str, kind: str, match: list[dict[str, Any]], steps: list[dict[str, Any]], **spec: Any
) -> dict:
    return {
        "apiVersion": STAGE_API,
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": match},
            **spec,
            "steps": steps,
        },
    }


def _status_patch(template: str) -> dict[str, Any]:
    return {"patch": {"subresource": "status", "root": "status", "template": template}}


# Go templates rendered by kwok; the functions (Now, NodeConditions, NodeIPWith, PodIPWith, Quote)
# are kwok's.
_NODE_READY = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
{{ if not .status.capacity }}
capacity: {cpu: "32", memory: 256Gi, pods: "110"}
allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
{{ end }}
phase: Running
"""

_NODE_HEARTBEAT = """\
{{ $now := Now }}
conditions:
{{ range .status.conditions }}
- type: {{ .type | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
{{ end }}
"""

_NODE_NOT_READY = """\
{{ $now := Now }}
conditions:
- type: Ready
  status: "False"
  reason: SimulatedFault
  message: "simulated fault: kubelet stopped posting ready status"
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
"""

_POD_RUNNING = """\
{{ $now := Now }}
conditions:
- {type: PodReadyToStartContainers, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: {{ printf "sim://%s" .image | Quote }}
  containerID: {{ printf "sim://%s" .name | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPWith .spec.nodeName }}
hostIP: {{ . | Quote }}
hostIPs:
- ip: {{ . | Quote }}
{{ end }}
{{ $hostNet := or .spec.hostNetwork false }}
{{ with PodIPWith .spec.nodeName $hostNet ( or .metadata.uid "" ) .metadata.name .metadata.namespace }}
podIP: {{ . | Quote }}
podIPs:
- ip: {{ . | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _pod_terminated(phase: str, exit_code: int, reason: str) -> str:
    return (
        (
            """\
{{ $now := Now }}
{{ $started := or .status.startTime $now }}
conditions:
- {type: ContainersReady, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: EXIT
      reason: REASON
      startedAt: {{ $started | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
phase: PHASE
"""
        )
        .replace("EXIT", str(exit_code))
        .replace("REASON", reason)
        .replace("PHASE", phase)
    )


# When the run ends: startTime + run-seconds as an RFC 3339 time (kwok waits until then), or, with no
# startTime yet, "<N>s" from now. Anchoring to startTime keeps the duration exact even when the pod
# is updated (which makes kwok re-plan the stage) while it runs.
RUN_END_JQ = (
    f'{_ann(ANN_RUN_SECONDS)} as $s | if ((.status.startTime // "") != "") '
    "then ((.status.startTime | fromdateiso8601) + ($s | tonumber) | floor | todateiso8601) "
    'else ($s + "s") end'
)


def node_stages(
    heartbeat_ms: int = HEARTBEAT_MS, heartbeat_jitter_ms: int = HEARTBEAT_JITTER_MS
) -> list[dict[str, Any]]:
    no_fault = _jq(_ann(ANN_FAULT), "DoesNotExist")
    return [
        _stage(
            "aicenter-node-initialize",
            "Node",
            [_jq(READY_STATUS, "NotIn", ["True"]), no_fault],
            [_status_patch(_NODE_READY)],
        ),
        _stage(
            "aicenter-node-heartbeat",
            "Node",
            [_jq(".status.phase", "In", ["Running"]), _jq(READY_STATUS, "In", ["True"]), no_fault],
            [_status_patch(_NODE_HEARTBEAT)],
            delay={"durationMilliseconds": heartbeat_ms, "jitterDurationMilliseconds": heartbeat_jitter_ms},
        ),
        _stage(
            "aicenter-node-fault-not-ready",
            "Node",
            [_jq(_ann(ANN_FAULT), "In", [FAULT_NOT_READY]), _jq(READY_STATUS, "NotIn", ["False"])],
            [_status_patch(_NODE_NOT_READY)],
        ),
    ]


def pod_stages() -> list[dict[str, Any]]:
    alive = _jq(".metadata.deletionTimestamp", "DoesNotExist")
    running = _jq(".status.phase", "In", ["Running"])
    timed = _jq(_ann(ANN_RUN_SECONDS), "Exists")
    end = {"durationMilliseconds": 0, "durationFrom": {"jq": {"expression": RUN_END_JQ}}}
    return [
        _stage(
            "aicenter-pod-running",
            "Pod",
            [alive, _jq(".status.phase", "In", ["Pending"]), _jq(".spec.nodeName", "Exists")],
            [_status_patch(_POD_RUNNING)],
        ),
        _stage(
            "aicenter-pod-succeeded",
            "Pod",
            [alive, running, timed, _jq(_ann(ANN_OUTCOME), "NotIn", ["Failed"])],
            [_status_patch(_pod_terminated("Succeeded", 0, "Completed"))],
            delay=end,
        ),
        _stage(
            "aicenter-pod-failed",
            "Pod",
            [alive, running, timed, _jq(_ann(ANN_OUTCOME), "In", ["Failed"])],
            [_status_patch(_pod_terminated("Failed", 1, "Error"))],
            delay=end,
        ),
        _stage(
            "aicenter-pod-delete",
            "Pod",
            [_jq(".metadata.deletionTimestamp", "Exists"), _jq(".metadata.finalizers", "DoesNotExist")],
            [{"delete": True}],
        ),
    ]


def all_stages(tuning: Tuning | None = None) -> list[dict[str, Any]]:
    nodes = node_stages(tuning.heartbeat_ms, tuning.heartbeat_jitter_ms) if tuning else node_stages()
    return nodes + pod_stages()


def kwok_configuration(
    node_lease_seconds: int = 120, pod_cidr: str = "10.244.0.0/16", lease_parallelism: int = 8
) -> dict[str, Any]:
    """kwok's options. Workers: 8 renew leases (``lease_parallelism``), 8 play node Stages, 8 play pod
    Stages (kwok's default is 4 each; its API client has no rate limit, so these bound how many
    writes it has in flight)."""
    return {
        "apiVersion": CONFIG_API,
        "kind": "KwokConfiguration",
        "options": {
            "cidr": pod_cidr,
            "nodeLeaseDurationSeconds": node_lease_seconds,
            "nodeLeaseParallelism": lease_parallelism,
            "nodePlayStageParallelism": 8,
            "podPlayStageParallelism": 8,
        },
    }


def kwok_config_documents(
    node_lease_seconds: int = 120, tuning: Tuning | None = None
) -> list[dict[str, Any]]:
    """The multi-document ``--config`` file for the kwok controller: its options and every Stage.

    With ``tuning`` (:func:`aicenter_testbed.sim.tuning.tuning_for`) its lease duration and heartbeat
    interval are used instead of ``node_lease_seconds`` and the kubelet-like defaults.
    """
    if tuning is None:
        return [kwok_configuration(node_lease_seconds), *all_stages()]
    options = kwok_configuration(tuning.node_lease_seconds, lease_parallelism=tuning.kwok_lease_parallelism)
    return [options, *all_stages(tuning)]
