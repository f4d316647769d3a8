"""Unit tests of the GPU device plugin: no kind, no cluster, no GPU.

The plugin's gRPC server runs on a socket in a temporary directory; a fake kubelet serves
Registration there and then talks to the plugin as the kubelet does (GetDevicePluginOptions,
ListAndWatch, GetPreferredAllocation, Allocate, PreStartContainer). NVML is a fake module.
"""

from __future__ import annotations

import argparse
import queue
import re
import shutil
import tempfile
import threading
import types
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio not installed (a dependency of hack/deviceplugin)")
pytest.importorskip("google.protobuf", reason="protobuf not installed (a dependency of hack/deviceplugin)")

from aicenter_deviceplugin import discovery, main, node, server  # noqa: E402
from aicenter_deviceplugin import protocol as pb  # noqa: E402
from aicenter_testbed.fleet import load_fleet  # noqa: E402

NODE = "kind-worker"
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------------------------------------
# fixtures: a short socket directory (unix socket paths are limited to ~107 bytes), a fake kubelet


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class FakeKubelet:
    """Serves Registration on ``kubelet.sock`` and records each RegisterRequest."""

    def __init__(self, directory: Path):
        self.socket = directory / "kubelet.sock"
        self.requests: queue.Queue = queue.Queue()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((pb.generic_handler(pb.REGISTRATION, self),))
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()

    def Register(self, request, context):  # the Registration service
        self.requests.put(request)
        return pb.Empty()

    def next_request(self, timeout: float = 5.0):
        return self.requests.get(timeout=timeout)

    def stop(self) -> None:
        self.server.stop(0).wait()


@pytest.fixture
def kubelet(sockdir) -> Iterator[FakeKubelet]:
    k = FakeKubelet(sockdir)
    yield k
    k.stop()


@pytest.fixture
def b200() -> discovery.Inventory:
    return discovery.simulated_inventory(NODE, discovery.find_profile("B200"))


@pytest.fixture
def plugin(sockdir, kubelet, b200) -> Iterator[server.GpuDevicePlugin]:
    p = server.GpuDevicePlugin(b200, plugin_dir=sockdir, socket_name="sim-gpu.sock")
    p.start()
    yield p
    p.stop()


@pytest.fixture
def stub(plugin) -> Iterator[pb.Stub]:
    """A DevicePlugin client on the plugin's socket, as the kubelet dials it."""
    with grpc.insecure_channel(f"unix://{plugin.socket_path}") as ch:
        grpc.channel_ready_future(ch).result(timeout=5)
        yield pb.Stub(ch, pb.DEVICE_PLUGIN)


class ListAndWatchReader:
    """Reads a ListAndWatch stream on a thread so each response can be awaited with a timeout."""

    def __init__(self, stub: pb.Stub):
        self.call = stub.ListAndWatch(pb.Empty())
        self.q: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for resp in self.call:
                self.q.put(resp)
        except grpc.RpcError:
            pass

    def next(self, timeout: float = 5.0):
        return self.q.get(timeout=timeout)

    def close(self):
        self.call.cancel()


# ---------------------------------------------------------------------------------------------
# the protocol


def test_descriptors_match_the_proto_file(tmp_path):
    """protocol.py's hand-built descriptors and api.proto describe the same API."""
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools not installed")
    from google.protobuf import descriptor_pb2

    proto_dir = Path(pb.__file__).parent
    out = tmp_path / "api.pb"
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}", str(proto_dir / "api.proto")]
    )
    assert rc == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    ours = pb.file_descriptor_proto()
    assert compiled.package == ours.package == "v1beta1"

    def fields(fd):
        out = {}
        for m in fd.message_type:
            out[m.name] = [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field]
            for n in m.nested_type:
                out[f"{m.name}.{n.name}"] = [(f.name, f.number, f.type, f.label) for f in n.field]
                assert n.options.map_entry
        return out

    def services(fd):
        return {
            s.name: [(m.name, m.input_type, m.output_type, m.server_streaming) for m in s.method]
            for s in fd.service
        }

    assert fields(ours) == fields(compiled)
    assert services(ours) == services(compiled)


def test_method_paths_and_wire_format():
    assert pb.method(pb.REGISTRATION, "Register").path == "/v1beta1.Registration/Register"
    assert pb.method(pb.DEVICE_PLUGIN, "ListAndWatch").server_streaming
    # Device{ID=1:"x", health=2:"Healthy"} as the kubelet's Go code encodes it
    assert pb.Device(ID="x", health="Healthy").SerializeToString() == b"\n\x01x\x12\x07Healthy"
    r = pb.ContainerAllocateResponse.FromString(
        pb.ContainerAllocateResponse(envs={"A": "1"}).SerializeToString()
    )
    assert dict(r.envs) == {"A": "1"}


# ---------------------------------------------------------------------------------------------
# inventory: profiles, fake UUIDs, NVML


def test_profiles_are_the_fleet_shapes():
    shapes = load_fleet().shapes
    for shape in shapes.values():
        for name in (shape.gpu_class, shape.product, shape.gpu_class.lower()):
            p = discovery.find_profile(name)
            assert (p.product, p.count, p.memory_mib, p.family) == (
                shape.product,
                shape.gpus_per_node,
                shape.memory_mib,
                shape.family,
            )
    assert discovery.find_profile("hgx-b300").memory_mib == 275040
    assert discovery.find_profile("GB200").count == 4
    with pytest.raises(ValueError, match="unknown GPU profile"):
        discovery.find_profile("H100")


def test_fake_uuids_are_stable_and_distinct(b200):
    assert b200.count == 8 and b200.product == "NVIDIA-B200" and b200.memory_mib == 183359
    ids = [d.uuid for d in b200.devices]
    assert all(UUID_RE.match(i) for i in ids)
    assert len(set(ids)) == 8
    again = discovery.simulated_inventory(NODE, discovery.find_profile("hgx-b200"))
    assert [d.uuid for d in again.devices] == ids
    other = discovery.simulated_inventory("kind-worker2", discovery.find_profile("B200"))
    assert not set(ids) & {d.uuid for d in other.devices}
    assert discovery.fake_uuid(NODE, 3) == ids[3]


class FakeNVMLError(Exception):
    pass


def fake_nvml(devices: list[dict], *, init_error: bool = False, bytes_names: bool = False):
    """A stand-in for nvidia-ml-py's pynvml module with ``devices``."""
    calls = []

    def init():
        calls.append("init")
        if init_error:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def cc(h):
        if "cc" not in devices[h]:
            raise FakeNVMLError("Not Supported")
        return devices[h]["cc"]

    def name(h):
        return devices[h]["name"].encode() if bytes_names else devices[h]["name"]

    return types.SimpleNamespace(
        NVMLError=FakeNVMLError,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=name,
        nvmlDeviceGetUUID=lambda h: devices[h]["uuid"],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=devices[h]["mem"], free=0, used=0),
        nvmlDeviceGetMinorNumber=lambda h: h,
        nvmlDeviceGetCudaComputeCapability=cc,
        nvmlSystemGetDriverVersion=lambda: "580.95.05",
    )


H100 = [
    {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{i}1111111-2222-3333-4444-555555555555",
        "mem": 85520809984,
        "cc": (9, 0),
    }
    for i in range(2)
]


def test_nvml_inventory_maps_devices():
    nvml = fake_nvml(H100)
    inv = discovery.nvml_inventory(nvml)
    assert inv.backend == "nvml"
    assert inv.count == 2
    assert inv.product == "NVIDIA-H100-80GB-HBM3"
    assert inv.memory_mib == 81559  # 85520809984 bytes
    assert inv.family == "hopper"
    assert inv.driver_version == "580.95.05"
    assert [d.uuid for d in inv.devices] == [d["uuid"] for d in H100]
    assert [d.minor for d in inv.devices] == [0, 1]
    assert nvml.calls == ["init", "shutdown"]
    labels = node.gfd_labels(inv)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/gpu.family"] == "hopper"


def test_nvml_old_bindings_and_unsupported_calls():
    devs = [{"name": "NVIDIA B200", "uuid": "GPU-b", "mem": 192265846784}]  # no compute capability
    inv = discovery.nvml_inventory(fake_nvml(devs, bytes_names=True))
    assert inv.product == "NVIDIA-B200" and inv.family == "undefined"
    assert discovery.family_of(10, 0) == "blackwell"
    assert discovery.family_of(8, 9) == "ada-lovelace"
    assert discovery.family_of(8, 0) == "ampere"
    assert discovery.family_of(7, 5) == "turing"


def test_backend_selection():
    b200 = discovery.find_profile("B200")

    def loader_of(module):
        return lambda: module

    def no_module():
        raise ImportError("No module named 'pynvml'")

    # auto: NVML when it loads and sees GPUs
    inv = discovery.select_inventory("auto", NODE, b200, nvml_loader=loader_of(fake_nvml(H100)))
    assert inv.backend == "nvml" and inv.count == 2
    # auto: simulated when nvidia-ml-py is missing, NVML fails to initialise, or there is no GPU
    for loader in (no_module, loader_of(fake_nvml(H100, init_error=True)), loader_of(fake_nvml([]))):
        inv = discovery.select_inventory("auto", NODE, b200, nvml_loader=loader)
        assert inv.backend == "simulated" and inv.count == 8 and inv.product == "NVIDIA-B200"
    # nvml: an error when unavailable, never a silent simulation
    with pytest.raises(RuntimeError, match="NVML backend"):
        discovery.select_inventory("nvml", NODE, b200, nvml_loader=no_module)

    # simulated: NVML is not even loaded
    def must_not_load():
        raise AssertionError("NVML loaded for the simulated backend")

    inv = discovery.select_inventory(
        "simulated", NODE, b200, count=2, memory_mib=1000, nvml_loader=must_not_load
    )
    assert (inv.count, inv.memory_mib) == (2, 1000)
    with pytest.raises(ValueError):
        discovery.select_inventory("cuda", NODE, b200)


# ---------------------------------------------------------------------------------------------
# fault specs


def test_parse_unhealthy(b200):
    ids = [d.uuid for d in b200.devices]
    assert server.parse_unhealthy("", b200) == set()
    assert server.parse_unhealthy(None, b200) == set()
    assert server.parse_unhealthy("0", b200) == set()
    assert server.parse_unhealthy("2", b200) == set(ids[6:])
    assert server.parse_unhealthy(" 2\n", b200) == set(ids[6:])
    assert server.parse_unhealthy("99", b200) == set(ids)
    assert server.parse_unhealthy("all", b200) == set(ids)
    assert server.parse_unhealthy(f"{ids[1]},#3", b200) == {ids[1], ids[3]}
    assert server.parse_unhealthy("GPU-nope,#42", b200) == set()


# ---------------------------------------------------------------------------------------------
# the gRPC server against a fake kubelet


def test_register_names_the_resource(plugin, kubelet):
    plugin.register(timeout=5)
    req = kubelet.next_request()
    assert req.resource_name == "nvidia.com/gpu"
    assert req.version == "v1beta1"
    assert req.endpoint == "sim-gpu.sock"
    assert req.options.get_preferred_allocation_available
    assert not req.options.pre_start_required


def test_options_and_prestart(stub):
    opts = stub.GetDevicePluginOptions(pb.Empty(), timeout=5)
    assert opts.get_preferred_allocation_available and not opts.pre_start_required
    assert stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["x"]), timeout=5) == (
        pb.PreStartContainerResponse()
    )


def test_list_and_watch_streams_devices_and_health_changes(plugin, stub, b200):
    ids = [d.uuid for d in b200.devices]
    reader = ListAndWatchReader(stub)
    try:
        first = reader.next()
        assert [d.ID for d in first.devices] == ids
        assert {d.health for d in first.devices} == {"Healthy"}
        # fault injection: the last device goes unhealthy → the kubelet gets a new list at once
        assert plugin.set_unhealthy(server.parse_unhealthy("1", b200))
        second = reader.next()
        health = {d.ID: d.health for d in second.devices}
        assert health[ids[-1]] == "Unhealthy"
        assert sum(h == "Healthy" for h in health.values()) == 7
        # the same state again sends nothing; recovery sends the healthy list
        assert not plugin.set_unhealthy(server.parse_unhealthy("1", b200))
        assert plugin.set_unhealthy(set())
        third = reader.next()
        assert {d.health for d in third.devices} == {"Healthy"}
        with pytest.raises(queue.Empty):
            reader.next(timeout=0.3)
    finally:
        reader.close()


def test_allocate_returns_the_gpu_env(stub, b200):
    ids = [d.uuid for d in b200.devices]
    req = pb.AllocateRequest()
    req.container_requests.add(devices_ids=[ids[3], ids[1]])
    req.container_requests.add(devices_ids=[ids[0]])
    resp = stub.Allocate(req, timeout=5)
    assert len(resp.container_responses) == 2
    env = dict(resp.container_responses[0].envs)
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{ids[1]},{ids[3]}"
    assert env["AICENTER_GPU_UUIDS"] == env["NVIDIA_VISIBLE_DEVICES"]
    assert env["AICENTER_GPU_INDEXES"] == "1,3"
    assert env["AICENTER_GPU_PRODUCT"] == "NVIDIA-B200"
    assert env["AICENTER_GPU_MEMORY_MIB"] == "183359"
    assert dict(resp.container_responses[1].envs)["NVIDIA_VISIBLE_DEVICES"] == ids[0]
    bad = pb.AllocateRequest()
    bad.container_requests.add(devices_ids=["GPU-not-here"])
    with pytest.raises(grpc.RpcError) as err:
        stub.Allocate(bad, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_preferred_allocation_packs_low_healthy_indices(plugin, stub, b200):
    ids = [d.uuid for d in b200.devices]
    plugin.set_unhealthy({ids[0]})
    req = pb.PreferredAllocationRequest()
    req.container_requests.add(
        available_deviceIDs=list(reversed(ids)), must_include_deviceIDs=[ids[5]], allocation_size=3
    )
    resp = stub.GetPreferredAllocation(req, timeout=5)
    assert list(resp.container_responses[0].deviceIDs) == [ids[5], ids[1], ids[2]]


# ---------------------------------------------------------------------------------------------
# the agent loop: node labels, the fault annotation and file, profile label, kubelet restarts


class FakeCoreV1:
    def __init__(self, labels=None, annotations=None):
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.patches: list[dict] = []

    def read_node(self, name):
        assert name == NODE
        md = types.SimpleNamespace(labels=dict(self.labels), annotations=dict(self.annotations))
        return types.SimpleNamespace(metadata=md)

    def patch_node(self, name, body):
        self.patches.append(body)
        self.labels.update(body["metadata"]["labels"])


def agent_args(sockdir: Path, **kw) -> argparse.Namespace:
    args = main.build_parser().parse_args(
        [
            "--node-name",
            NODE,
            "--backend",
            "simulated",
            "--plugin-dir",
            str(sockdir),
            "--socket-name",
            "sim.sock",
            "--fault-file",
            str(sockdir / "faults"),
        ]
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_agent_labels_node_and_injects_faults(sockdir, kubelet):
    api = FakeCoreV1(labels={"kubernetes.io/hostname": NODE})
    agent = main.Agent(agent_args(sockdir), node.NodeClient(NODE, api=api))
    try:
        agent.tick()
        assert kubelet.next_request().resource_name == "nvidia.com/gpu"
        assert api.labels["nvidia.com/gpu.product"] == "NVIDIA-B200"
        assert api.labels["nvidia.com/gpu.count"] == "8"
        assert api.labels["nvidia.com/gpu.memory"] == "183359"
        assert api.labels["nvidia.com/gpu.family"] == "blackwell"
        assert api.labels["nvidia.com/gpu.present"] == "true"
        agent.tick()
        assert len(api.patches) == 1  # labels already right: no second patch
        ids = [d.uuid for d in agent.plugin.inventory.devices]
        api.annotations[node.ANNOTATION_UNHEALTHY] = "2"
        agent.tick()
        assert agent.plugin.unhealthy == set(ids[6:])
        (sockdir / "faults").write_text(f"{ids[0]}\n")
        agent.tick()
        assert agent.plugin.unhealthy == {ids[0], *ids[6:]}
        del api.annotations[node.ANNOTATION_UNHEALTHY]
        (sockdir / "faults").unlink()
        agent.tick()
        assert agent.plugin.unhealthy == set()
        # a profile label switches the simulated shape
        api.labels[node.LABEL_PROFILE] = "GB200"
        agent.tick()
        agent.tick()
        assert agent.plugin.inventory.product == "NVIDIA-GB200" and agent.plugin.inventory.count == 4
        assert api.labels["nvidia.com/gpu.count"] == "4"
    finally:
        agent.plugin.stop()


def test_agent_registers_again_after_a_kubelet_restart(sockdir, kubelet):
    agent = main.Agent(agent_args(sockdir, label_node=False, fault_annotation=""), None)
    try:
        agent.tick()
        assert kubelet.next_request().endpoint == "sim.sock"
        agent.tick()
        assert kubelet.requests.empty()  # nothing changed: no new registration
        # a restarting kubelet removes every socket in the directory, its own included, and
        # recreates its own
        kubelet.stop()
        agent.plugin.socket_path.unlink()
        agent.tick()
        assert not agent.registered
        kubelet2 = FakeKubelet(sockdir)
        try:
            agent.tick()
            assert kubelet2.next_request().resource_name == "nvidia.com/gpu"
            assert agent.registered and agent.plugin.serving
        finally:
            kubelet2.stop()
    finally:
        agent.plugin.stop()


def test_main_requires_a_node_name(monkeypatch):
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main.main(["--backend", "simulated", "--no-label-node", "--fault-annotation", ""]) == 2
