"""The cache: everything the operator knows, fed by watch events, and the core fed from it.

Observed state is the ledger. What a node holds is what the pods bound to it request — ours or
anyone's, until they are gone (terminating pods included) — plus the reservations of admissions
whose pods do not exist yet. For the core this splits in two:

- *placements* (reservations of admitted work, in :class:`~aicenter.controller.records.JobRecord`):
  the core holds their GPUs and resources itself;
- *other usage* (:class:`~aicenter.controller.objects.NodeUsage`): every bound, live pod that no
  placement claims — other schedulers' pods, our pods of an earlier attempt, of a deleted job, of a
  preempted gang still terminating. It holds room until the pod is gone, so nothing is released
  before its pods are.

A pod of ours is claimed only by the placement whose job UID, attempt and replica it carries.

Everything here runs on the event loop's thread; informers and kopf only post to it. Changes to
nodes are batched: :meth:`Cache.flush` feeds the core the nodes that changed since the last cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from aicenter import api
from aicenter.api import Obj
from aicenter.api.specs import GPUJobSpec, GPUQuotaSpec
from aicenter.core import Scheduler, TopologyMode, Workload

from .groups import (
    ANN_TOPOLOGY_KEY,
    ANN_TOPOLOGY_MODE,
    GroupRecord,
    Identity,
    gpu_class_of,
    identity,
    pod_preemptible,
    quota_label,
)
from .objects import (
    CenterInfo,
    NodeUsage,
    NodeView,
    center_info,
    constraints_of,
    core_node,
    not_evaluated,
    parse_time,
    pod_requests,
    quota_spec,
    refused,
    selector_matches,
)
from .records import JobRecord, kept, record_from

log = logging.getLogger("aicenter.cache")
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class WorkloadFacts:
    """What a pod the operator schedules for someone else asks (its spec, labels and annotations)."""

    group: Identity
    priority: int
    preemptible: bool
    quota: str | None
    gpu_class: str | None
    topology_key: str | None
    topology_mode: str
    pod_spec: Obj  # the scheduling-relevant part (tolerations, selectors, affinity, containers…)
    refusal: str


@dataclass(slots=True)
class PodRec:
    """A pod trimmed to what the ledger and lifecycle need. ``source``: ``ours`` (a GPUJob's pod,
    with its job identity), ``workload`` (someone else's pod that names the operator as its
    scheduler) or ``others`` (any other bound pod: it only holds room)."""

    key: str  # namespace/name
    uid: str
    node: str  # "" while unbound
    phase: str
    requests: dict[str, int]  # effective requests, every resource (GPUs included)
    deleting: bool = False
    source: str = "others"  # how the cache treats it
    origin: str = ""  # the informer it came from (its RESYNCs replace these)
    job_uid: str = ""
    job: str = ""
    attempt: int = -1
    replica: int = -1
    reason: str = ""  # status.reason: the kubelet's admission refusals (OutOfnvidia.com/gpu, …)
    unschedulable: str = ""  # PodScheduled=False message of a pod kube-scheduler binds for us
    created: float = 0.0
    workload: WorkloadFacts | None = None
    scheduled_reason: str = ""  # the PodScheduled=False reason it carries (workload pods)

    @property
    def ours(self) -> bool:
        return self.source == "ours"

    @property
    def live(self) -> bool:
        return self.phase not in TERMINAL

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]


SCHEDULING_FIELDS = (
    "tolerations",
    "nodeSelector",
    "affinity",
    "containers",
    "initContainers",
    "overhead",
    "volumes",
    "topologySpreadConstraints",
    "resourceClaims",
)


def trim_pod(obj: Obj, source: str) -> PodRec:
    """A pod as the cache keeps it (runs on the informer thread); ``source`` names the informer."""
    md, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    labels = md.get("labels") or {}
    ours = source == "ours"
    p = PodRec(
        key=f"{md.get('namespace', '')}/{md['name']}",
        uid=md.get("uid", ""),
        node=spec.get("nodeName") or "",
        phase=st.get("phase") or "Pending",
        requests=pod_requests(spec),
        deleting=bool(md.get("deletionTimestamp")),
        source=source,
        origin=source,
        created=parse_time(md.get("creationTimestamp")) or 0.0,
    )
    if source == "workload":
        ann = md.get("annotations") or {}
        pod_spec = {k: spec[k] for k in SCHEDULING_FIELDS if k in spec}
        not_here = not_evaluated(pod_spec)
        refusal = refused(pod_spec) or (
            f"the operator binds this pod itself and cannot evaluate its {' and '.join(not_here)}; "
            "use a GPUJob (which delegates such pods to kube-scheduler) or the default scheduler"
            if not_here
            else ""
        )
        p.workload = WorkloadFacts(
            group=identity(obj),
            priority=int(spec.get("priority") or 0),
            preemptible=pod_preemptible(labels),
            quota=quota_label(labels),
            gpu_class=gpu_class_of(labels),
            topology_key=ann.get(ANN_TOPOLOGY_KEY) or None,
            topology_mode=ann.get(ANN_TOPOLOGY_MODE) or api.TOPOLOGY_REQUIRED,
            pod_spec=pod_spec,
            refusal=refusal,
        )
        for c in st.get("conditions") or ():
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                p.scheduled_reason = f"{c.get('reason', '')}: {c.get('message', '')}"
    if ours:
        p.job_uid = labels.get(api.LABEL_JOB_UID, "")
        p.job = labels.get(api.LABEL_JOB, "")
        p.attempt = _int(labels.get(api.LABEL_ATTEMPT), _attempt_from_name(md["name"]))
        p.replica = _int(labels.get(api.LABEL_REPLICA), -1)
        p.reason = st.get("reason") or ""
        if not p.node:
            for c in st.get("conditions") or ():
                if c.get("type") == "PodScheduled" and c.get("status") == "False":
                    p.unschedulable = c.get("message") or c.get("reason") or ""
    return p


def _int(v: str | None, default: int) -> int:
    try:
        return int(v) if v is not None else default
    except ValueError:
        return default


def _attempt_from_name(name: str) -> int:
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1


@dataclass
class InFlight:
    """A pod create of ours not yet seen by the watch: its room is held on its node meanwhile."""

    node: str
    requests: dict[str, int]
    creating: bool = True  # the request has not answered yet (it may land any moment)
    since: float = 0.0  # when it answered


FORGET_UNSEEN_S = 30.0  # a created pod the watch has not shown this long after: gone before it was seen


_NO_GROUP = GroupRecord(Identity("", "", "", None), "")


@dataclass
class _Contribution:
    node: str
    requests: dict[str, int]
    draining: bool


@dataclass
class Cache:
    sched: Scheduler
    on_dirty: Callable[[], None] = lambda: None  # wakes the loop
    centers: dict[str, CenterInfo] = field(default_factory=dict)
    center_objs: dict[str, Obj] = field(default_factory=dict)
    quotas: dict[str, Obj] = field(default_factory=dict)
    quota_specs: dict[str, GPUQuotaSpec] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    jobs_by_uid: dict[str, JobRecord] = field(default_factory=dict)
    job_seen: dict[str, float] = field(default_factory=dict)  # key → when an event last arrived
    unplaced_by_ns: dict[str, set[str]] = field(default_factory=dict)  # jobs awaiting a quota decision
    views: dict[str, NodeView] = field(default_factory=dict)
    node_center: dict[str, str] = field(default_factory=dict)
    usage: dict[str, NodeUsage] = field(default_factory=dict)
    pods: dict[str, PodRec] = field(default_factory=dict)  # every pod we watch, by namespace/name
    by_job: dict[str, set[str]] = field(default_factory=dict)  # job uid → pod keys of ours
    on_node: dict[str, set[str]] = field(default_factory=dict)  # node → bound pod keys
    contrib: dict[str, _Contribution] = field(default_factory=dict)  # pod key → its 'other' share
    deleting: set[str] = field(default_factory=set)  # pod keys we are deleting
    inflight: dict[str, InFlight] = field(default_factory=dict)  # pod key → reservation
    orphans: set[str] = field(default_factory=set)  # live pods of ours that no placement claims
    groups: dict[str, GroupRecord] = field(default_factory=dict)  # pods we schedule for others, by group
    dirty_groups: set[str] = field(default_factory=set)
    owner_sizes: dict[str, int | str] = field(default_factory=dict)  # owner uid → group size, or why not
    dirty_nodes: set[str] = field(default_factory=set)
    dirty: set[str] = field(default_factory=set)  # job keys to reconcile
    status_dirty: set[str] = field(default_factory=set)  # job keys whose status may need a write
    synced: set[str] = field(default_factory=set)
    leading: bool = False  # the leader's records are its own truth; a standby follows the statuses
    watched: frozenset[str] = frozenset()  # --namespace: only these namespaces' jobs and pods are ours
    clock: Callable[[], float] = lambda: 0.0
    _waiters: list[asyncio.Future] = field(default_factory=list)

    # -- waiting on pod changes -------------------------------------------------------------------

    async def wait_change(self, timeout: float) -> None:
        """Return after the next pod change (or ``timeout``)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def notify(self) -> None:
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        self._waiters.clear()

    # -- nodes ----------------------------------------------------------------------------------

    def on_nodes(self, kind: str, obj: object) -> None:
        """Informer delivery: ``RESYNC`` (a full list of views), ``ADDED``/``MODIFIED``/``DELETED``."""
        if kind == "RESYNC":
            fresh = {v.name: v for v in obj}  # type: ignore[union-attr]
            for name in set(self.views) - set(fresh):
                self._node_gone(name)
            for v in fresh.values():
                self._node_set(v)
            self.synced.add("nodes")
        elif kind == "DELETED":
            self._node_gone(obj.name)  # type: ignore[union-attr]
        else:
            self._node_set(obj)  # type: ignore[arg-type]
        self.on_dirty()

    def _node_set(self, v: NodeView) -> None:
        old = self.views.get(v.name)
        self.views[v.name] = v
        if old is None or old.labels != v.labels:
            self._assign(v.name)
        self.dirty_nodes.add(v.name)

    def _node_gone(self, name: str) -> None:
        self.views.pop(name, None)
        self.node_center.pop(name, None)
        self.dirty_nodes.add(name)

    def _assign(self, name: str) -> None:
        labels = self.views[name].labels
        for cname in sorted(self.centers):
            if self.centers[cname].selects(labels):
                self.node_center[name] = cname
                break
        else:
            self.node_center.pop(name, None)

    def flush(self) -> None:
        """Feed the core every node that changed: managed, unmanaged (left its centre) or gone."""
        for name in self.dirty_nodes:
            v = self.views.get(name)
            if v is None:
                self.sched.remove_node(name)
                continue
            center = self.centers.get(self.node_center.get(name, ""))
            n = core_node(v, center, self.usage.get(name))
            if n is None:  # in a centre but of no class it knows: unmanaged
                n = core_node(v, None, self.usage.get(name))
            assert n is not None
            self.sched.set_node(n)
        self.dirty_nodes.clear()

    # -- pods -----------------------------------------------------------------------------------

    def on_pods(self, kind: str, obj: object) -> None:
        """Pods of ours (every phase) and others' bound, live pods; RESYNC replaces one source."""
        if kind.startswith("RESYNC"):
            source = kind.split(":", 1)[1] if ":" in kind else "ours"
            fresh = {p.key: p for p in map(self._in_scope, obj)}  # type: ignore[arg-type]
            for key in [k for k, p in self.pods.items() if self._source(p) == source and k not in fresh]:
                self._pod_gone(key)
            for p in fresh.values():
                self._pod_set(p)
            self.synced.add(f"pods:{source}")
        elif kind == "DELETED":
            self._pod_gone(obj.key)  # type: ignore[union-attr]
        else:
            p: PodRec = self._in_scope(obj)  # type: ignore[arg-type]
            if p.source == "others" and (not p.node or not p.live):
                self._pod_gone(p.key)  # finished (it left the foreign selector), or unbound elsewhere
            else:
                self._pod_set(p)
        self.notify()
        self.on_dirty()

    @staticmethod
    def _source(p: PodRec) -> str:
        return p.origin

    def _in_scope(self, p: PodRec) -> PodRec:
        """With --namespace, pods of ours (or for us) elsewhere are another operator's: they only
        hold room on their nodes (never orphans of ours, never bound by us)."""
        if self.watched and p.source != "others" and p.namespace not in self.watched:
            p.source, p.workload = "others", None
        return p

    def _pod_set(self, p: PodRec) -> None:
        old = self.pods.get(p.key)
        if old is not None and old.node and old.node != p.node:
            self.on_node.get(old.node, set()).discard(p.key)
        self.pods[p.key] = p
        if p.node:
            self.on_node.setdefault(p.node, set()).add(p.key)
        f = self.inflight.get(p.key)
        if f is not None and (p.ours or p.node == f.node):  # seen created, or seen bound
            del self.inflight[p.key]
        if p.workload is not None:
            g = self.groups.get(p.workload.group.key)
            if g is None:
                g = self.groups[p.workload.group.key] = GroupRecord(p.workload.group, p.namespace)
            g.members.add(p.key)
            if g.binding.get(p.key) == p.node:
                del g.binding[p.key]  # the binding is seen: the pod is bound now
            self.dirty_groups.add(g.key)
        if p.ours:
            self.by_job.setdefault(p.job_uid, set()).add(p.key)
            rec = self.jobs_by_uid.get(p.job_uid)
            if rec is not None:
                self.dirty.add(rec.key)
        self.recount(p.key)

    def _pod_gone(self, key: str) -> None:
        p = self.pods.pop(key, None)
        self.deleting.discard(key)
        self.inflight.pop(key, None)
        if p is None:
            return
        if p.node:
            on = self.on_node.get(p.node)
            if on is not None:
                on.discard(key)
                if not on:
                    del self.on_node[p.node]
        if p.workload is not None:
            g = self.groups.get(p.workload.group.key)
            if g is not None:
                g.members.discard(key)
                g.binding.pop(key, None)
                g.evicting.discard(key)
                g.held.pop(key, None)
                self.dirty_groups.add(g.key)
        if p.ours:
            keys = self.by_job.get(p.job_uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_job[p.job_uid]
            rec = self.jobs_by_uid.get(p.job_uid)
            if rec is not None:
                self.dirty.add(rec.key)
        self.recount(key)

    def claimed(self, p: PodRec) -> bool:
        """Whether a live placement of ours accounts for this pod."""
        if p.workload is not None:
            g = self.groups.get(p.workload.group.key)
            node = g.held.get(p.key) if g is not None else None
            return node is not None and p.node in ("", node) and p.key not in g.evicting  # type: ignore[union-attr]
        if not p.ours:
            return False
        rec = self.jobs_by_uid.get(p.job_uid)
        if rec is None or rec.finished:
            return False
        pl = rec.claims(p.job_uid, p.attempt, p.replica, p.name)
        return pl is not None and p.node in ("", pl.node)

    def recount(self, key: str) -> None:
        """Bring one pod's share of its node's 'other' usage (and the orphan set) up to date."""
        p = self.pods.get(key)
        new = None
        unclaimed = p is not None and p.live and not self.claimed(p)
        if p is not None and p.ours and unclaimed and p.job_uid:
            self.orphans.add(key)
        else:
            self.orphans.discard(key)
        if p is not None and p.node and unclaimed:
            evicting = (
                p.workload is not None and key in self.groups.get(p.workload.group.key, _NO_GROUP).evicting
            )
            draining = p.deleting or key in self.deleting or p.ours or evicting or p.phase == "Pending"
            new = _Contribution(p.node, p.requests, draining)
        old = self.contrib.get(key)
        if old == new:
            return
        if old is not None:
            self._apply(old, -1)
            del self.contrib[key]
        if new is not None:
            self._apply(new, +1)
            self.contrib[key] = new

    def _usage(self, node: str) -> NodeUsage:
        u = self.usage.get(node)
        if u is None:
            u = self.usage[node] = NodeUsage()
        return u

    def _apply(self, c: _Contribution, sign: int) -> None:
        u = self._usage(c.node)
        u.add(c.requests, c.draining, sign)
        if u.empty:
            del self.usage[c.node]
        self.dirty_nodes.add(c.node)

    def recount_job(self, rec: JobRecord) -> None:
        """After a job's placements changed: which of its pods they claim."""
        for key in list(self.by_job.get(rec.uid, ())):
            self.recount(key)

    def mark_deleting(self, key: str) -> None:
        self.deleting.add(key)
        self.recount(key)

    def expire_inflight(self, now: float) -> None:
        """Forget reservations of creates that answered long ago and that the watch never showed: the
        pod was deleted before it was seen (a watch that fails relists, and a list would show it)."""
        for key in [
            k for k, f in self.inflight.items() if not f.creating and now - f.since > FORGET_UNSEEN_S
        ]:
            if key not in self.pods:
                del self.inflight[key]

    def room(self, node: str, requests: dict[str, int], exclude: str = "") -> bool:
        """Whether ``requests`` fit the node now, counting every bound live pod and in-flight create."""
        v = self.views.get(node)
        if v is None:
            return False
        used: dict[str, int] = {}
        for key in self.on_node.get(node, ()):
            p = self.pods[key]
            if p.live and key != exclude:
                for k, a in p.requests.items():
                    used[k] = used.get(k, 0) + a
        for key, f in self.inflight.items():
            seen = self.pods.get(key)
            if f.node == node and key != exclude and (seen is None or seen.node != node):
                for k, a in f.requests.items():
                    used[k] = used.get(k, 0) + a
        return all(used.get(k, 0) + a <= v.allocatable.get(k, 0) for k, a in requests.items())

    # -- centres, quotas, namespaces ----------------------------------------------------------------

    def on_center(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.centers.pop(name, None)
            self.center_objs.pop(name, None)
            self.sched.remove_center(name)
        else:
            old = self.center_objs.get(name)
            self.center_objs[name] = obj
            if old is not None and _gen(old) == _gen(obj) and name in self.centers:
                return  # a status echo
            info = center_info(obj)
            if self.centers.get(name) == info:
                return
            self.centers[name] = info
            self.sched.set_center(info.core)
        for n in self.views:
            self._assign(n)
            self.dirty_nodes.add(n)
        for rec in self.jobs.values():  # a template's GPU resource comes from its centre
            if not rec.placements and rec.center == name:
                self.resolve(rec)
        self.on_dirty()

    def on_quota(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        old_spec = self.quota_specs.get(name)
        if kind == "DELETED":
            self.quotas.pop(name, None)
            self.quota_specs.pop(name, None)
            self.sched.remove_quota(name)
            new_spec = None
        else:
            old = self.quotas.get(name)
            self.quotas[name] = obj
            if old is not None and _gen(old) == _gen(obj) and old_spec is not None:
                return  # a status echo
            new_spec = GPUQuotaSpec.parse(obj)
            self.quota_specs[name] = new_spec
            self.sched.set_quota(quota_spec(obj))
        sels = [s.namespace_selector for s in (old_spec, new_spec) if s is not None]
        for ns, keys in list(self.unplaced_by_ns.items()):
            ns_hit = any(selector_matches(s, self._ns_labels(ns)) for s in sels)
            for key in list(keys):
                rec = self.jobs.get(key)
                if rec is not None and (ns_hit or rec.spec.quota == name or rec.quota == name):
                    self.resolve(rec)
        self.on_dirty()

    def on_namespaces(self, kind: str, obj: object) -> None:
        if kind == "RESYNC":
            self.namespaces = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in obj}  # type: ignore[union-attr]
            for ns in list(self.unplaced_by_ns):
                self._resolve_namespace(ns)
            self.synced.add("namespaces")
        else:
            o: Obj = obj  # type: ignore[assignment]
            name = o["metadata"]["name"]
            labels = o["metadata"].get("labels") or {}
            if kind == "DELETED":
                self.namespaces.pop(name, None)
            elif self.namespaces.get(name) == labels:
                return
            else:
                self.namespaces[name] = labels
            self._resolve_namespace(name)
        self.on_dirty()

    def _ns_labels(self, ns: str) -> dict[str, str]:
        return {**self.namespaces.get(ns, {}), "kubernetes.io/metadata.name": ns}

    def _resolve_namespace(self, ns: str) -> None:
        for key in list(self.unplaced_by_ns.get(ns, ())):
            rec = self.jobs.get(key)
            if rec is not None:
                self.resolve(rec)

    def track(self, rec: JobRecord) -> None:
        keys = self.unplaced_by_ns.setdefault(rec.namespace, set())
        if rec.placements or rec.finished:
            keys.discard(rec.key)
            if not keys:
                del self.unplaced_by_ns[rec.namespace]
        else:
            keys.add(rec.key)

    def quota_for(self, namespace: str, named: str | None, how: str = "spec.quota") -> tuple[str | None, str]:
        """(the quota that pays, or None and why): the named one, or the one serving the namespace."""
        if named:
            return named, ""
        labels = self._ns_labels(namespace)
        serving = sorted(
            q for q, s in self.quota_specs.items() if selector_matches(s.namespace_selector, labels)
        )
        if len(serving) == 1:
            return serving[0], ""
        if not serving:
            return None, f"no GPUQuota serves namespace {namespace}: set {how} or label the namespace"
        return None, f"namespace {namespace} is served by several quotas ({', '.join(serving)}): set {how}"

    def resolve(self, rec: JobRecord) -> None:
        """Which quota pays, which centre, what the template asks of nodes; re-queued if that changed."""
        if rec.placements or rec.finished:
            return
        before = (rec.quota, rec.quota_error, rec.center, rec.constraints, rec.refusal, rec.delegated)
        rec.quota, rec.quota_error = self.quota_for(rec.namespace, rec.spec.quota)
        q = self.quota_specs.get(rec.quota or "")
        rec.center = q.center if q else None
        center = self.centers.get(rec.center or "")
        resource = center.spec.gpu_resource if center else api.DEFAULT_GPU_RESOURCE
        pod_spec = rec.spec.template.get("spec") or {}
        rec.constraints = constraints_of(pod_spec, resource)
        rec.refusal = refused(pod_spec) or ""
        if not rec.refusal and resource in _template_resources(pod_spec):
            rec.refusal = (
                f"the pod template asks for {resource} itself; GPUs come only from spec.gpusPerReplica"
            )
        rec.delegated = bool(not_evaluated(pod_spec))
        if (rec.quota, rec.quota_error, rec.center, rec.constraints, rec.refusal, rec.delegated) != before:
            self.sync_workloads(rec)
            self.dirty.add(rec.key)

    # -- jobs -----------------------------------------------------------------------------------

    def on_job(self, kind: str, obj: Obj) -> None:
        md = obj["metadata"]
        key = f"{md['namespace']}/{md['name']}"
        self.job_seen[key] = self.clock()
        rec = self.jobs.get(key)
        if kind == "DELETED":
            if rec is not None and rec.uid == md.get("uid"):
                self.drop(rec)
            self.job_seen.pop(key, None)
            self.on_dirty()
            return
        if rec is not None and rec.uid != md.get("uid"):
            self.drop(rec)  # deleted and created again under the same name: a new job
            rec = None
        if rec is None or not self.leading:
            self._adopt(record_from(obj), rec)
        else:
            gen_changed = _gen(rec.obj) != _gen(obj)
            rec.obj = kept(obj)
            if gen_changed:
                self._respec(rec)
        self.dirty.add(key)
        self.on_dirty()

    def _adopt(self, rec: JobRecord, old: JobRecord | None) -> None:
        if old is not None:
            self._forget(old)
        self.jobs[rec.key] = rec
        self.jobs_by_uid[rec.uid] = rec
        self.resolve(rec)
        self.track(rec)
        self.sync_workloads(rec)
        self.recount_job(rec)

    def _respec(self, rec: JobRecord) -> None:
        """The spec changed (priority, preemptible, quota of a pending job, …)."""
        rec.spec = GPUJobSpec.parse(rec.obj)
        rec.observe_generation()
        self.status_dirty.add(rec.key)
        if rec.busy:
            rec.respec = True  # writes in flight: the lifecycle re-presents it when they are done
            return
        self.resolve(rec)
        self.sync_workloads(rec)

    def _forget(self, rec: JobRecord) -> None:
        self.jobs.pop(rec.key, None)
        if self.jobs_by_uid.get(rec.uid) is rec:
            del self.jobs_by_uid[rec.uid]
        for k in rec.unit_keys():
            self.sched.remove_workload(k)
        keys = self.unplaced_by_ns.get(rec.namespace)
        if keys is not None:
            keys.discard(rec.key)
            if not keys:
                del self.unplaced_by_ns[rec.namespace]

    def drop(self, rec: JobRecord) -> None:
        """A deleted job: its placements go; its pods hold their room until they are gone."""
        self._forget(rec)
        rec.placements.clear()
        self.recount_job(rec)

    def finish(self, rec: JobRecord, phase: str, reason: str, message: str, now: float) -> None:
        """The job is over: its units leave the core; its live pods become orphans (deleted)."""
        rec.phase, rec.reason, rec.message = phase, reason, message
        rec.finished_at = now
        rec.placements.clear()
        rec.set_condition("Finished", True, reason, message, now)
        for k in rec.unit_keys():
            self.sched.remove_workload(k)
        self.recount_job(rec)
        self.track(rec)
        self.status_dirty.add(rec.key)

    def sync_workloads(self, rec: JobRecord) -> None:
        """Re-present the job's units to the core (pending ones queue, placed ones hold)."""
        for k in rec.unit_keys():
            self.sched.remove_workload(k)
        self.track(rec)
        if rec.quota is None or rec.refusal or rec.finished:
            return
        for w in rec.workloads():
            if w.placement is not None and w.placed_class is None:
                continue
            if w.placement is None and self.clock() < rec.retry_at:
                continue  # backing off after a failed admission
            self.sched.add_workload(w)

    def rebuild(self, items: Iterable[Obj], listed_at: float) -> None:
        """Merge a fresh list of jobs: a job seen before the list and absent from it was deleted;
        one seen after the list started keeps the view its event gave."""
        fresh = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in items}
        for key, rec in list(self.jobs.items()):
            if key not in fresh and self.job_seen.get(key, 0.0) < listed_at:
                self.drop(rec)
                self.job_seen.pop(key, None)
        for key, o in fresh.items():
            if self.job_seen.get(key, 0.0) >= listed_at and key in self.jobs:
                continue
            rec = self.jobs.get(key)
            if rec is not None and rec.uid != o["metadata"].get("uid"):
                self.drop(rec)
                rec = None
            self._adopt(record_from(o), rec)
            self.dirty.add(key)
        self.on_dirty()

    def sweep_deleted(self, kind: str, names: set[str], listed_at: float) -> None:
        """A metadata-only list of a kind: objects seen before it and absent from it are gone
        (a watch that relists after 410 Gone does not report deletions)."""
        if kind == api.KIND_GPUJOB:
            for key, rec in list(self.jobs.items()):
                if key not in names and self.job_seen.get(key, 0.0) < listed_at:
                    log.info("job %s is gone (not in a fresh list)", key)
                    self.drop(rec)
                    self.job_seen.pop(key, None)
        elif kind == api.KIND_GPUQUOTA:
            for name in set(self.quotas) - names:
                self.on_quota("DELETED", self.quotas[name])
        elif kind == api.KIND_AICENTER:
            for name in set(self.center_objs) - names:
                self.on_center("DELETED", self.center_objs[name])
        self.on_dirty()

    # -- groups of pods we schedule for others ----------------------------------------------------

    def sync_groups(self, now: float) -> None:
        """Re-present to the core the groups whose pods changed (not while their bindings fly)."""
        for key in sorted(self.dirty_groups):
            g = self.groups.get(key)
            if g is None:
                self.dirty_groups.discard(key)
                continue
            if g.busy:
                continue
            self.dirty_groups.discard(key)
            self.sync_group(g, now)

    def sync_group(self, g: GroupRecord, now: float) -> None:
        """A group as two core units: what runs (its bound pods: held) and what waits to be placed."""
        self.sched.remove_workload(g.run_key)
        self.sched.remove_workload(g.wait_key)
        members = sorted(
            (self.pods[k] for k in g.members if k in self.pods), key=lambda p: (p.created, p.key)
        )
        if not members:
            self.groups.pop(g.key, None)
            return
        facts = members[0].workload
        assert facts is not None
        if g.ident.size is not None:
            g.size = g.ident.size
        elif g.ident.owner is not None:
            known = self.owner_sizes.get(g.ident.owner.uid)
            g.size = known if isinstance(known, int) else None
            g.size_error = known if isinstance(known, str) else ""
        g.quota, error = self.quota_for(g.namespace, facts.quota, f"the {api.LABEL_QUOTA} label")
        q = self.quota_specs.get(g.quota or "")
        g.center = q.center if q else None
        center = self.centers.get(g.center or "")
        resource = center.spec.gpu_resource if center else api.DEFAULT_GPU_RESOURCE
        live = [p for p in members if p.live and not p.deleting and p.key not in g.evicting]
        bound = {p.key: p.node for p in live if p.node}
        # bindings sent and not seen yet — answered, or whose answer was lost — hold their nodes too
        unseen = {p.key: self.inflight[p.key].node for p in live if not p.node and p.key in self.inflight}
        held = {**bound, **unseen, **{k: n for k, n in g.binding.items() if k in self.pods}}
        pending = [p for p in live if not p.node and p.key not in held]
        gpus = max((p.requests.get(resource, 0) for p in live), default=0)
        size = g.size
        refusal = facts.refusal or error
        if not refusal and gpus == 0 and live:
            refusal = (
                f"its pods ask for no {resource}: the operator schedules GPU pods (use the default scheduler)"
            )
        g.chosen = []
        if refusal:
            g.held = {}
            g.reason, g.message = ("NoQuota" if error else "Unsupported"), refusal
            for k in g.members:
                self.recount(k)
            return
        constraints = constraints_of(facts.pod_spec, resource)
        shape = {
            "quota": g.quota or "",
            "gpus_per_replica": gpus,
            "gpu_class": facts.gpu_class,
            "topology_key": facts.topology_key,
            "topology_mode": TopologyMode(facts.topology_mode),
            "priority": facts.priority,
            "preemptible": facts.preemptible,
        }
        g.held = held
        if held:
            ns = self.sched.inventory.nodes.get(next(iter(held.values())))
            g.placed_class = ns.node.gpu_class if ns is not None else (g.placed_class or facts.gpu_class)
            if g.placed_class:
                self.sched.add_workload(
                    Workload(
                        key=g.run_key,
                        replicas=len(held),
                        created=members[0].created,
                        placement=tuple(held.values()),
                        placed_class=g.placed_class,
                        started=members[0].created,
                        constraints=constraints,
                        **shape,  # type: ignore[arg-type]
                    )
                )
        need = 0
        if size is None:
            g.reason = "WaitingForOwner"
            g.message = g.size_error or f"reading the size of {g.ident.kind} {g.ident.name} from its owner"
        elif pending:
            lacking = max(0, min(size, g.min_available) - len(held))
            need = lacking or len(pending)
            if len(pending) < need:
                g.waiting_since = g.waiting_since or now
                waited = now - g.waiting_since
                g.reason = "WaitingForMembers"
                g.message = (
                    f"{g.ident.kind} {g.ident.name} needs {size} pod(s) to start together; "
                    f"{len(held) + len(pending)} exist"
                    + (f" (waiting {waited:.0f}s)" if waited >= 60 else "")
                )
                need = 0
        if need and now >= g.retry_at:
            g.waiting_since = None
            g.chosen = [p.key for p in pending[:need]]
            if held and facts.topology_key:  # the rest go next to the members already running
                v = self.views.get(next(iter(held.values())))
                value = v.labels.get(facts.topology_key) if v is not None else None
                if value is not None:
                    pairs = {*constraints.node_selector, (facts.topology_key, value)}
                    constraints = replace(constraints, node_selector=tuple(sorted(pairs)))
            self.sched.add_workload(
                Workload(
                    key=g.wait_key,
                    replicas=need,
                    created=min(self.pods[k].created for k in g.chosen),
                    constraints=constraints,
                    **shape,  # type: ignore[arg-type]
                )
            )
        for k in g.members:
            self.recount(k)

    def ready(self) -> bool:
        return {"nodes", "pods:ours", "pods:others", "pods:workload", "namespaces"} <= self.synced


def _gen(obj: Obj) -> int:
    return int(obj["metadata"].get("generation", 0))


def _template_resources(pod_spec: Obj) -> set[str]:
    out: set[str] = set()
    for c in [*(pod_spec.get("containers") or ()), *(pod_spec.get("initContainers") or ())]:
        res = c.get("resources") or {}
        out |= set(res.get("limits") or {}) | set(res.get("requests") or {})
    return out
