"""A GPU device plugin for the kubelet: simulated GPUs from the fleet shapes, or real ones via NVML.

Runs as a DaemonSet (``hack/kind/deviceplugin.yaml``, image ``aicenter-deviceplugin:kind``):
``aicenter-deviceplugin`` or ``python -m aicenter_deviceplugin``. It speaks the kubelet
device-plugin gRPC API v1beta1 (:mod:`.protocol`, descriptors built by hand from ``api.proto``),
advertises ``nvidia.com/gpu`` devices (:mod:`.discovery`, :mod:`.server`), labels its node like GPU
Feature Discovery and takes fault injection from a node annotation or a file (:mod:`.node`,
:mod:`.main`). Needs ``grpcio``, ``protobuf`` and ``kubernetes`` (its dependencies in
hack/deviceplugin/pyproject.toml); the NVML backend also needs ``nvidia-ml-py``.
"""
