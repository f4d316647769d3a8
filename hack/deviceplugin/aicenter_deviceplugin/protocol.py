"""The kubelet device-plugin API v1beta1: message classes and gRPC method tables, built by hand.

The descriptors below are built at import time with ``descriptor_pb2`` in a private descriptor
pool (so they never clash with another copy of the API in the default pool); ``api.proto`` beside
this file is the same API written as a ``.proto`` for readers, and a unit test checks the two
agree. Only ``protobuf`` and ``grpcio`` are needed: no protoc, no generated modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

try:  # protobuf >= 4.21
    from google.protobuf.message_factory import GetMessageClass as _get_message_class
except ImportError:  # pragma: no cover - older protobuf
    from google.protobuf.message_factory import MessageFactory

    _get_message_class = MessageFactory().GetPrototype  # type: ignore[assignment]

PACKAGE = "v1beta1"
VERSION = "v1beta1"  # RegisterRequest.version
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins/"
KUBELET_SOCKET = DEVICE_PLUGIN_PATH + "kubelet.sock"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

_F = descriptor_pb2.FieldDescriptorProto
STRING, BOOL, INT32, INT64 = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_INT32, _F.TYPE_INT64
REPEATED = "repeated"
MAP = "map<string,string>"

# message → [(field name, number, scalar type or message name, "repeated"?)]; order as in api.proto
MESSAGES: dict[str, list[tuple]] = {
    "DevicePluginOptions": [("pre_start_required", 1, BOOL), ("get_preferred_allocation_available", 2, BOOL)],
    "RegisterRequest": [
        ("version", 1, STRING),
        ("endpoint", 2, STRING),
        ("resource_name", 3, STRING),
        ("options", 4, "DevicePluginOptions"),
    ],
    "Empty": [],
    "ListAndWatchResponse": [("devices", 1, "Device", REPEATED)],
    "TopologyInfo": [("nodes", 1, "NUMANode", REPEATED)],
    "NUMANode": [("ID", 1, INT64)],
    "Device": [("ID", 1, STRING), ("health", 2, STRING), ("topology", 3, "TopologyInfo")],
    "PreStartContainerRequest": [("devices_ids", 1, STRING, REPEATED)],
    "PreStartContainerResponse": [],
    "PreferredAllocationRequest": [
        ("container_requests", 1, "ContainerPreferredAllocationRequest", REPEATED)
    ],
    "ContainerPreferredAllocationRequest": [
        ("available_deviceIDs", 1, STRING, REPEATED),
        ("must_include_deviceIDs", 2, STRING, REPEATED),
        ("allocation_size", 3, INT32),
    ],
    "PreferredAllocationResponse": [
        ("container_responses", 1, "ContainerPreferredAllocationResponse", REPEATED)
    ],
    "ContainerPreferredAllocationResponse": [("deviceIDs", 1, STRING, REPEATED)],
    "AllocateRequest": [("container_requests", 1, "ContainerAllocateRequest", REPEATED)],
    "ContainerAllocateRequest": [("devices_ids", 1, STRING, REPEATED)],
    "CDIDevice": [("name", 1, STRING)],
    "AllocateResponse": [("container_responses", 1, "ContainerAllocateResponse", REPEATED)],
    "ContainerAllocateResponse": [
        ("envs", 1, MAP),
        ("mounts", 2, "Mount", REPEATED),
        ("devices", 3, "DeviceSpec", REPEATED),
        ("annotations", 4, MAP),
        ("cdi_devices", 5, "CDIDevice", REPEATED),
    ],
    "Mount": [("container_path", 1, STRING), ("host_path", 2, STRING), ("read_only", 3, BOOL)],
    "DeviceSpec": [("container_path", 1, STRING), ("host_path", 2, STRING), ("permissions", 3, STRING)],
}


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: str
    response: str
    server_streaming: bool = False

    @property
    def path(self) -> str:
        """The gRPC method path, e.g. ``/v1beta1.DevicePlugin/Allocate``."""
        return f"/{PACKAGE}.{self.service}/{self.name}"


REGISTRATION = "Registration"
DEVICE_PLUGIN = "DevicePlugin"
METHODS: tuple[Method, ...] = (
    Method(REGISTRATION, "Register", "RegisterRequest", "Empty"),
    Method(DEVICE_PLUGIN, "GetDevicePluginOptions", "Empty", "DevicePluginOptions"),
    Method(DEVICE_PLUGIN, "ListAndWatch", "Empty", "ListAndWatchResponse", server_streaming=True),
    Method(
        DEVICE_PLUGIN, "GetPreferredAllocation", "PreferredAllocationRequest", "PreferredAllocationResponse"
    ),
    Method(DEVICE_PLUGIN, "Allocate", "AllocateRequest", "AllocateResponse"),
    Method(DEVICE_PLUGIN, "PreStartContainer", "PreStartContainerRequest", "PreStartContainerResponse"),
)


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The API as a FileDescriptorProto (messages and services)."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="aicenter/deviceplugin/api.proto", package=PACKAGE, syntax="proto3"
    )
    for msg_name, fields in MESSAGES.items():
        msg = fd.message_type.add(name=msg_name)
        for spec in fields:
            name, number, typ = spec[0], spec[1], spec[2]
            repeated = len(spec) > 3 and spec[3] == REPEATED
            f = msg.field.add(name=name, number=number, json_name=_json_name(name))
            if typ == MAP:
                entry = msg.nested_type.add(name=_camel(name) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=STRING, label=_F.LABEL_OPTIONAL, json_name="key")
                entry.field.add(
                    name="value", number=2, type=STRING, label=_F.LABEL_OPTIONAL, json_name="value"
                )
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}.{msg_name}.{entry.name}"
                f.label = _F.LABEL_REPEATED
            elif isinstance(typ, str):
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}.{typ}"
                f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            else:
                f.type = typ
                f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    for service in (REGISTRATION, DEVICE_PLUGIN):
        svc = fd.service.add(name=service)
        for m in METHODS:
            if m.service == service:
                svc.method.add(
                    name=m.name,
                    input_type=f".{PACKAGE}.{m.request}",
                    output_type=f".{PACKAGE}.{m.response}",
                    server_streaming=m.server_streaming,
                )
    return fd


def _json_name(name: str) -> str:
    """protoc's json_name: lowerCamelCase of the field name (underscores dropped)."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


POOL = descriptor_pool.DescriptorPool()
FILE = POOL.Add(file_descriptor_proto())
_classes: dict[str, type] = {
    name: _get_message_class(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in MESSAGES
}

DevicePluginOptions: Any = _classes["DevicePluginOptions"]
RegisterRequest: Any = _classes["RegisterRequest"]
Empty: Any = _classes["Empty"]
ListAndWatchResponse: Any = _classes["ListAndWatchResponse"]
TopologyInfo: Any = _classes["TopologyInfo"]
NUMANode: Any = _classes["NUMANode"]
Device: Any = _classes["Device"]
PreStartContainerRequest: Any = _classes["PreStartContainerRequest"]
PreStartContainerResponse: Any = _classes["PreStartContainerResponse"]
PreferredAllocationRequest: Any = _classes["PreferredAllocationRequest"]
ContainerPreferredAllocationRequest: Any = _classes["ContainerPreferredAllocationRequest"]
PreferredAllocationResponse: Any = _classes["PreferredAllocationResponse"]
ContainerPreferredAllocationResponse: Any = _classes["ContainerPreferredAllocationResponse"]
AllocateRequest: Any = _classes["AllocateRequest"]
ContainerAllocateRequest: Any = _classes["ContainerAllocateRequest"]
CDIDevice: Any = _classes["CDIDevice"]
AllocateResponse: Any = _classes["AllocateResponse"]
ContainerAllocateResponse: Any = _classes["ContainerAllocateResponse"]
Mount: Any = _classes["Mount"]
DeviceSpec: Any = _classes["DeviceSpec"]


def message_class(name: str) -> type:
    return _classes[name]


def method(service: str, name: str) -> Method:
    for m in METHODS:
        if m.service == service and m.name == name:
            return m
    raise KeyError(f"{service}.{name}")


def generic_handler(service: str, implementation: object):
    """A grpc GenericRpcHandler serving ``service`` by the same-named methods of ``implementation``."""
    import grpc

    handlers = {}
    for m in METHODS:
        if m.service != service:
            continue
        fn: Callable = getattr(implementation, m.name)
        req, resp = _classes[m.request], _classes[m.response]
        make = (
            grpc.unary_stream_rpc_method_handler
            if m.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[m.name] = make(
            fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
        )
    return grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", handlers)


class Stub:
    """A client for one service on ``channel``: ``Stub(ch, DEVICE_PLUGIN).Allocate(request)``."""

    def __init__(self, channel, service: str):
        for m in METHODS:
            if m.service != service:
                continue
            req, resp = _classes[m.request], _classes[m.response]
            factory = channel.unary_stream if m.server_streaming else channel.unary_unary
            setattr(
                self,
                m.name,
                factory(
                    m.path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString
                ),
            )
