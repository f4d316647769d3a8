"""The operator's record of a GPUJob: what it decided, rebuilt from the job's status on start.

The record is the operator's truth while it runs (decisions are assumed here at once); the job's
status in the cluster is the durable copy: an admission is written there (placements with pod
names) *before* any pod is created, so a restarted operator rebuilds exactly what it had decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aicenter import api
from aicenter.core import TopologyMode, Workload

from .convert import parse_time, rfc3339

Obj = dict[str, Any]
FINISHED = ("Succeeded", "Failed")


@dataclass
class Placement:
    node: str
    pod: str


@dataclass
class JobRecord:
    namespace: str
    name: str
    uid: str
    created: float
    obj: Obj  # the latest object seen (spec and metadata are read from here)
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    quota: str | None = None
    center: str | None = None
    gpu_class: str | None = None
    placements: dict[int, Placement] = field(default_factory=dict)
    restarts: int = 0
    preemptions: list[Obj] = field(default_factory=list)
    admitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    draining: set[str] = field(default_factory=set)  # pods being deleted before a requeue
    done: set[int] = field(default_factory=set)  # replicas that succeeded
    seen: set[str] = field(default_factory=set)  # pods of current placements seen in the cache
    quota_error: str = ""  # why no quota could be resolved, in words
    busy: int = 0  # apply tasks in flight on the record (a counter: they may overlap)
    conditions: dict[str, Obj] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> Obj:
        return self.obj.get("spec") or {}

    @property
    def replicas(self) -> int:
        return int(self.spec.get("replicas", 1))

    @property
    def gpus_per_replica(self) -> int:
        return int(self.spec.get("gpusPerReplica", 1))

    @property
    def gang(self) -> bool:
        return (self.spec.get("gang") or {}).get("policy", api.GANG_ALL_OR_NOTHING) != api.GANG_INDEPENDENT

    @property
    def attempt(self) -> int:
        """Pod names carry it, so a restarted or preempted gang never reuses a name."""
        return self.restarts + len(self.preemptions)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def unit_keys(self) -> list[str]:
        """Core workload keys: one for a gang, one per replica for an independent job."""
        return [self.key] if self.gang else [f"{self.key}#{i}" for i in range(self.replicas)]

    def unit_replicas(self, key: str) -> list[int]:
        return list(range(self.replicas)) if key == self.key else [int(key.rsplit("#", 1)[1])]

    def workloads(self) -> list[Workload]:
        """Core workloads for this job, holding GPUs where the record has placements."""
        spec = self.spec
        topo = spec.get("topology") or {}
        out = []
        for key in self.unit_keys():
            reps = self.unit_replicas(key)
            if self.finished or all(r in self.done for r in reps):
                continue
            placed = [self.placements[r].node for r in reps if r in self.placements]
            running = len(placed) == len(reps) and not self.finished
            out.append(
                Workload(
                    key=key,
                    quota=self.quota or "",
                    replicas=len(reps),
                    gpus_per_replica=self.gpus_per_replica,
                    created=self.created,
                    gpu_class=spec.get("gpuClass") or None,
                    topology_key=topo.get("key") or None,
                    topology_mode=TopologyMode(topo.get("mode", "Required")),
                    priority=int(spec.get("priority", 0)),
                    preemptible=bool(spec.get("preemptible", True)),
                    placement=tuple(placed) if running else None,
                    placed_class=self.gpu_class if running else None,
                    started=self.admitted_at if running else None,
                )
            )
        return out

    def status(self) -> Obj:
        """The status subresource as the operator means it."""
        st: Obj = {
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "totalGPUs": self.replicas * self.gpus_per_replica,
            "restarts": self.restarts,
            "placements": [
                {"replica": r, "node": p.node, "pod": p.pod} for r, p in sorted(self.placements.items())
            ],
            "preemptions": self.preemptions,
            "observedGeneration": self.obj["metadata"].get("generation", 1),
            "conditions": list(self.conditions.values()),
        }
        for k, v in (("quota", self.quota), ("center", self.center), ("gpuClass", self.gpu_class)):
            if v:
                st[k] = v
        for k, t in (
            ("admittedAt", self.admitted_at),
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
        ):
            if t is not None:
                st[k] = rfc3339(t)
        return st

    def set_condition(self, ctype: str, ok: bool, reason: str, message: str, now: float) -> None:
        status = "True" if ok else "False"
        old = self.conditions.get(ctype)
        if old and old["status"] == status and old["reason"] == reason and old["message"] == message:
            return
        since = old["lastTransitionTime"] if old and old["status"] == status else rfc3339(now)
        self.conditions[ctype] = {
            "type": ctype,
            "status": status,
            "reason": reason or "Unknown",
            "message": message,
            "lastTransitionTime": since,
        }


def record_from(obj: Obj) -> JobRecord:
    """A record rebuilt from a job object and its status (as after a restart)."""
    md = obj["metadata"]
    st = obj.get("status") or {}
    rec = JobRecord(
        namespace=md["namespace"],
        name=md["name"],
        uid=md.get("uid", ""),
        created=parse_time(md.get("creationTimestamp")) or 0.0,
        obj=obj,
        phase=st.get("phase") or "Pending",
        reason=st.get("reason", ""),
        message=st.get("message", ""),
        quota=st.get("quota"),
        center=st.get("center"),
        gpu_class=st.get("gpuClass"),
        restarts=int(st.get("restarts", 0)),
        preemptions=list(st.get("preemptions") or []),
        admitted_at=parse_time(st.get("admittedAt")),
        started_at=parse_time(st.get("startedAt")),
        finished_at=parse_time(st.get("finishedAt")),
    )
    if rec.phase in ("Admitted", "Running"):
        for p in st.get("placements") or []:
            rec.placements[int(p["replica"])] = Placement(p["node"], p.get("pod", ""))
    for c in st.get("conditions") or []:
        if c.get("type"):
            rec.conditions[c["type"]] = c
    return rec
