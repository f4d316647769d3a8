"""Random API faults and cluster events, then quiescence, then the invariants (from the fake's state):

- no pod was ever created onto a node without room for it (no GPU sold twice: the fake kubelet counts
  every bound, live pod, terminating ones included);
- no node holds more GPUs than it has;
- no replica lives twice, and no pod of ours lives that no placement in its job's status claims;
- every job has a phase, and the operator's record agrees with the job's status;
- the core's own bookkeeping is sound.

``SHELL_FAULT_EXAMPLES`` sets how many random runs (default 25; a thorough search: 400).
"""

from __future__ import annotations

import asyncio
import os
import random

from fakeapi import Fault
from harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NS = ("alpha", "beta")
EXAMPLES = int(os.environ.get("SHELL_FAULT_EXAMPLES", "25"))


def chaos(rng: random.Random, error: float, lost: float, slow: float):
    def policy(method: str, path: str, body):
        if method == "GET":
            return None
        x = rng.random()
        if x < error:
            return Fault(status=rng.choice([0, 409, 429, 500, 503, 504]))
        if x < error + lost:
            return Fault(lost=True)
        if x < error + lost + slow:
            return Fault(delay=rng.choice([1.0, 3.0, 8.0]))
        return None

    return policy


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**31),
    error=st.sampled_from([0.0, 0.05, 0.15, 0.3]),
    lost=st.sampled_from([0.0, 0.05, 0.1]),
    slow=st.sampled_from([0.0, 0.1, 0.3]),
    drop=st.sampled_from([0.0, 0.02, 0.1]),
    lag=st.sampled_from([0.0, 2.0, 5.0]),
)
def test_random_faults_keep_the_invariants(seed, error, lost, slow, drop, lag):
    rng = random.Random(seed)
    h = Harness(faults=chaos(rng, error, lost, slow))
    c = h.cluster
    c.rng = random.Random(seed + 1)
    c.drop_watch = drop
    c.watch_delay = (0.0, lag)
    c.terminate_after = rng.choice([0.0, 2.0, 6.0])
    c.add_center("c", unhealthyGPUGraceSeconds=rng.choice([0, 10]), nodeNotReadyGraceSeconds=10)
    for ns in NS:
        c.add_namespace(ns)
    c.add_quota("qa", "alpha", 24, 48, cohort="co")
    c.add_quota("qb", "beta", 24, 48, cohort="co")
    for i in range(6):
        c.add_node(f"n{i}", rack=f"r{i // 3}")

    def submit(i: int) -> None:
        ns = rng.choice(NS)
        replicas = rng.choice([1, 1, 2, 3])
        gpus = rng.choice([2, 4, 8])
        spec: dict = {"priority": rng.choice([0, 0, 10, 100]), "backoffLimit": rng.choice([0, 2])}
        if rng.random() < 0.3:
            spec["gang"] = {"policy": "Independent"}
        if rng.random() < 0.3:
            spec["topology"] = {
                "key": "topology.aicenter.dev/rack",
                "mode": rng.choice(["Required", "Preferred"]),
            }
        c.submit(
            ns, f"j{i}", replicas, gpus, run_s=rng.choice([None, 5, 15, 40]), fail=rng.random() < 0.15, **spec
        )

    async def scenario() -> None:
        for i in range(6):
            submit(i)
        h.start()
        n = 6
        for _ in range(80):
            x = rng.random()
            if x < 0.12:
                submit(n)
                n += 1
            elif x < 0.16 and c.jobs:
                c.delete_job(rng.choice(sorted(c.jobs)))
            elif x < 0.20:
                node = rng.choice(sorted(c.nodes))
                c.set_allocatable(node, rng.choice([0, 4, 8]))
            elif x < 0.23:
                node = rng.choice(sorted(c.nodes))
                c.foreign_pod(
                    "others", f"f{n}", node, rng.choice([1, 2]), phase=rng.choice(["Running", "Pending"])
                )
                n += 1
            elif x < 0.25 and c.pods:
                c._delete_pod(rng.choice(sorted(c.pods)))  # someone deletes a pod
            elif x < 0.30:  # someone else's workload names the operator as its scheduler
                ns, size, gpus = rng.choice(NS), rng.choice([1, 2, 3]), rng.choice([2, 4, 8])
                name = f"w{n}"
                c.owners[f"{ns}/{name}"] = {"spec": {"parallelism": size}}
                owner = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": f"u{n}",
                    "controller": True,
                }
                for i in range(size if rng.random() < 0.8 else size - 1):  # sometimes a member is late
                    c.workload_pod(
                        ns,
                        f"{name}-{i}",
                        gpus,
                        labels={"batch.kubernetes.io/job-name": name},
                        owner=owner,
                        run_s=rng.choice([None, 10, 30]),
                        priority=rng.choice([0, 10]),
                    )
                n += 1
            await h.tick(1.0)
        for node in c.nodes:  # the device plugins come back
            c.set_allocatable(node, 8)
        await h.quiesce()
        h.check()

    asyncio.run(scenario())
