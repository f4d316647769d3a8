"""Kueue on the test bed: the same quotas as Kueue objects, and Kueue's manager run as a host process.

* :mod:`aicenter_testbed.kueue.mapping` (pure): AICenters/GPUQuotas → Topology, ResourceFlavors,
  Cohorts, ClusterQueues, LocalQueues, WorkloadPriorityClasses; trace jobs → Indexed batch Jobs.
* :mod:`aicenter_testbed.kueue.runner`: Kueue's CRDs, webhooks (URL-based, on 127.0.0.1, our CA) and
  configuration from the downloaded module, and :class:`~aicenter_testbed.kueue.runner.KueueProcess`.

The binary is built by :func:`aicenter_testbed.tools.ensure_kueue`. See docs/kueue.md.
"""
