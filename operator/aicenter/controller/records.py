"""The operator's record of a GPUJob: what it decided, rebuilt from the job's status on start.

The record is the operator's truth while it leads (decisions are assumed here at once); the job's
status in the cluster is the durable copy: an admission is written there (attempt, placements with
pod names) *before* any pod is created, so a restarted operator rebuilds what it had decided. Each
admission takes a new attempt number; a pod belongs to a placement only if its job UID, attempt and
replica all match (never by name alone).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aicenter import api
from aicenter.api import Obj
from aicenter.api.specs import GPUJobSpec
from aicenter.core import TopologyMode, Workload
from aicenter.core.constraints import NO_CONSTRAINTS, Constraints

from .kube import MERGE, Kube
from .objects import parse_time, rfc3339
from .pods import pod_name

FINISHED = (api.PHASE_SUCCEEDED, api.PHASE_FAILED)


@dataclass(frozen=True)
class Placement:
    node: str
    pod: str
    attempt: int


@dataclass
class JobRecord:
    namespace: str
    name: str
    uid: str
    created: float
    obj: Obj  # the latest object seen (metadata and spec are read from here)
    spec: GPUJobSpec
    phase: str = api.PHASE_PENDING
    reason: str = ""
    message: str = ""
    quota: str | None = None
    center: str | None = None
    gpu_class: str | None = None
    placements: dict[int, Placement] = field(default_factory=dict)
    attempt: int = 0  # the latest admission attempt (durable)
    restarts: int = 0
    preemptions: list[Obj] = field(default_factory=list)
    admitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    done: set[int] = field(default_factory=set)  # replicas that succeeded
    seen: set[str] = field(default_factory=set)  # pods of current placements seen in the cache
    quota_error: str = ""  # why no quota could be resolved, in words
    refusal: str = ""  # why the template can never be placed (it would bind blind)
    constraints: Constraints = NO_CONSTRAINTS
    delegated: bool = False  # kube-scheduler binds its pods (the operator cannot evaluate them)
    busy: int = 0  # apply tasks in flight on the record (a counter: they may overlap)
    respec: bool = False  # the spec changed while writes were in flight: re-present it after them
    written: Obj | None = None  # the status last written
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one status write at a time
    ttl_scheduled: bool = False
    retry_at: float = 0.0  # after a transient write failure: not admitted again before this
    failures: int = 0  # consecutive transient admission failures (backoff)
    conditions: dict[str, Obj] = field(default_factory=dict)
    waiting_text: str = ""  # the message last set for replicas of an independent job still waiting

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def generation(self) -> int:
        return int(self.obj["metadata"].get("generation", 1))

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def unit_keys(self) -> list[str]:
        """Core workload keys: one for a gang, one per replica for an independent job."""
        return [self.key] if self.spec.gang else [f"{self.key}#{i}" for i in range(self.replicas)]

    def unit_replicas(self, key: str) -> list[int]:
        return list(range(self.replicas)) if key == self.key else [int(key.rsplit("#", 1)[1])]

    def place(self, key: str, nodes: tuple[str, ...]) -> list[int]:
        """Assume an admission of unit ``key`` on ``nodes``: a new attempt, new pod names."""
        self.attempt += 1
        reps = self.unit_replicas(key)
        for r, node in zip(reps, nodes, strict=True):
            self.placements[r] = Placement(node, pod_name(self.name, self.attempt, r), self.attempt)
        return reps

    def claims(self, pod_uid_job: str, attempt: int, replica: int, name: str) -> Placement | None:
        """The placement a pod with this identity belongs to, if any."""
        p = self.placements.get(replica)
        if p is None or pod_uid_job != self.uid or p.attempt != attempt or p.pod != name:
            return None
        return p

    def workloads(self) -> list[Workload]:
        """Core workloads for this job, holding GPUs where the record has placements."""
        s = self.spec
        out = []
        for key in self.unit_keys():
            reps = self.unit_replicas(key)
            if self.finished or all(r in self.done for r in reps):
                continue
            placed = [self.placements[r].node for r in reps if r in self.placements]
            running = len(placed) == len(reps)
            out.append(
                Workload(
                    key=key,
                    quota=self.quota or "",
                    replicas=len(reps),
                    gpus_per_replica=s.gpus_per_replica,
                    created=self.created,
                    gpu_class=s.gpu_class,
                    topology_key=s.topology_key,
                    topology_mode=TopologyMode(s.topology_mode),
                    priority=s.priority,
                    preemptible=s.preemptible,
                    placement=tuple(placed) if running else None,
                    placed_class=self.gpu_class if running else None,
                    started=self.admitted_at if running else None,
                    constraints=self.constraints,
                )
            )
        return out

    def status(self) -> Obj:
        """The status subresource as the operator means it."""
        st: Obj = {
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "totalGPUs": self.spec.total_gpus,
            "attempt": self.attempt,
            "restarts": self.restarts,
            "placements": [
                {"replica": r, "node": p.node, "pod": p.pod} for r, p in sorted(self.placements.items())
            ],
            "preemptions": self.preemptions,
            "observedGeneration": self.generation,
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

    def observe_generation(self) -> None:
        """The spec was edited and taken in: the conditions now hold for its new generation (those
        that change because of it are set again by whatever decides them)."""
        for ctype, c in self.conditions.items():
            if c.get("observedGeneration") != self.generation:
                self.conditions[ctype] = {**c, "observedGeneration": self.generation}

    def set_condition(self, ctype: str, ok: bool, reason: str, message: str, now: float) -> None:
        """A metav1.Condition; its lastTransitionTime moves only when its status does."""
        status = "True" if ok else "False"
        old = self.conditions.get(ctype)
        if (
            old
            and old["status"] == status
            and old["reason"] == reason
            and old["message"] == message
            and old.get("observedGeneration") == self.generation
        ):
            return
        since = old["lastTransitionTime"] if old and old["status"] == status else rfc3339(now)
        self.conditions[ctype] = {
            "type": ctype,
            "status": status,
            "reason": reason or "Unknown",
            "message": message,
            "lastTransitionTime": since,
            "observedGeneration": self.generation,
        }


def kept(obj: Obj) -> Obj:
    """The part of a job object a record keeps: without its status (read once, into the record) and
    ``managedFields`` (about half of what the API server returns; never read)."""
    md = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": md}


def record_from(obj: Obj) -> JobRecord:
    """A record rebuilt from a job object and its status (as after a restart or a leader change)."""
    md = obj["metadata"]
    st = obj.get("status") or {}
    restarts = int(st.get("restarts", 0))
    preemptions = list(st.get("preemptions") or [])
    # Statuses written before attempts were recorded named pods <job>-<restarts + preemptions>-<r>.
    attempt = int(st.get("attempt", restarts + len(preemptions)))
    rec = JobRecord(
        namespace=md["namespace"],
        name=md["name"],
        uid=md.get("uid", ""),
        created=parse_time(md.get("creationTimestamp")) or 0.0,
        obj=kept(obj),
        spec=GPUJobSpec.parse(obj),
        phase=st.get("phase") or api.PHASE_PENDING,
        reason=st.get("reason", ""),
        message=st.get("message", ""),
        quota=st.get("quota"),
        center=st.get("center"),
        gpu_class=st.get("gpuClass"),
        attempt=attempt,
        restarts=restarts,
        preemptions=preemptions,
        admitted_at=parse_time(st.get("admittedAt")),
        started_at=parse_time(st.get("startedAt")),
        finished_at=parse_time(st.get("finishedAt")),
    )
    if rec.phase in (api.PHASE_ADMITTED, api.PHASE_RUNNING):
        for p in st.get("placements") or []:
            name = p.get("pod", "")
            a = _attempt_of(name, rec.name, attempt)
            rec.placements[int(p["replica"])] = Placement(p["node"], name, a)
    for c in st.get("conditions") or []:
        if c.get("type"):
            rec.conditions[c["type"]] = c
    return rec


def _attempt_of(pod: str, job: str, default: int) -> int:
    """The attempt in a pod name ``<job>-<attempt>-<replica>`` (independent replicas differ)."""
    parts = pod.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return default


async def write_job_status(kube: Kube, rec: JobRecord, force: bool = True) -> bool:
    """Write a job's status as it is when the write starts. One write per job at a time, so two
    writes never land out of order (the later one carries the later state); False if unchanged."""
    async with rec.status_lock:
        st = rec.status()
        if not force and rec.written == st:
            return False
        path = f"{api.GROUP_PATH}/namespaces/{rec.namespace}/{api.PLURAL_GPUJOBS}/{rec.name}/status"
        await kube.run("PATCH", path, body={"status": st}, content_type=MERGE)
        rec.written = st
        return True
