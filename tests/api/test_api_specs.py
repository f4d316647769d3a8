"""The typed specs parse an object the same before and after the API server's defaulting: the
shell's defaults and the CRDs' are the same constants (a drift in either fails here)."""

from __future__ import annotations

import pytest

from aicenter import api
from aicenter.api.crds import openapi_schema
from aicenter.api.specs import AICenterSpec, GPUJobSpec, GPUQuotaSpec
from aicenter_testbed.schema import apply_defaults

MINIMAL = {
    api.KIND_GPUJOB: {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUJOB,
        "metadata": {"name": "j", "namespace": "n"},
        "spec": {"gpusPerReplica": 8, "template": {"spec": {"containers": [{"name": "m"}]}}},
    },
    api.KIND_GPUQUOTA: {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUQUOTA,
        "metadata": {"name": "q"},
        "spec": {
            "center": "c",
            "namespaceSelector": {},
            "resources": [{"gpuClass": "B200", "guaranteed": 8}],
        },
    },
    api.KIND_AICENTER: {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_AICENTER,
        "metadata": {"name": "c"},
        "spec": {"nodeSelector": {}},
    },
}
PARSE = {
    api.KIND_GPUJOB: GPUJobSpec.parse,
    api.KIND_GPUQUOTA: GPUQuotaSpec.parse,
    api.KIND_AICENTER: AICenterSpec.parse,
}


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_defaults_are_the_crds(kind):
    obj = MINIMAL[kind]
    defaulted = apply_defaults(obj, openapi_schema(kind))
    assert defaulted != obj  # the CRD did default something
    assert PARSE[kind](obj) == PARSE[kind](defaulted)


def test_the_check_can_fail():
    obj = MINIMAL[api.KIND_GPUJOB]
    edited = {**obj, "spec": {**obj["spec"], "backoffLimit": api.DEFAULT_BACKOFF_LIMIT + 1}}
    assert GPUJobSpec.parse(obj) != GPUJobSpec.parse(edited)
