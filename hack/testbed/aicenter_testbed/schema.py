"""A small structural validator and defaulter for the aicenter.dev OpenAPI schemas.

It covers what the API server checks from the schema itself: types, required fields, unknown
(pruned) fields, enums, numeric and length bounds, patterns, item counts, list-map key and set
uniqueness, date-time format, and ``default:`` values. It does not evaluate CEL rules (the API
server does; see ``aicenter.api.crds.cel_rules``). Used to check the samples and by code that
handles objects without an API server (simulations, unit tests).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from aicenter.api import API_VERSION, NAMESPACED
from aicenter.api.crds import openapi_schema

Schema = dict[str, Any]

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def apply_defaults(value: Any, schema: Schema) -> Any:
    """A copy of ``value`` with the schema's ``default:`` values filled in, as the API server does."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, v in value.items():
                if name not in schema.get("properties", {}):
                    _default(v, extra)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(item, schema["items"])


def _type_ok(value: Any, type_: str) -> bool:
    if type_ == "object":
        return isinstance(value, dict)
    if type_ == "array":
        return isinstance(value, list)
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    return True


def validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Errors of ``value`` against ``schema``, each as ``"<path>: <problem>"``; empty when valid."""
    errors: list[str] = []
    _validate(value, schema, path or "<root>", errors)
    return errors


def _validate(value: Any, schema: Schema, path: str, errors: list[str]) -> None:
    type_ = schema.get("type")
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{path}: must not be null")
        return
    if type_ and not _type_ok(value, type_):
        errors.append(f"{path}: expected {type_}, got {type(value).__name__}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is more than the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
            errors.append(f"{path}: {value!r} is not an RFC 3339 date-time")
    if isinstance(value, list):
        _validate_list(value, schema, path, errors)
    if isinstance(value, dict):
        _validate_object(value, schema, path, errors)


def _validate_list(value: list, schema: Schema, path: str, errors: list[str]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen = []
        for item in value:
            if item in seen:
                errors.append(f"{path}: duplicate value {item!r}")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[tuple] = set()
        for item in value:
            if isinstance(item, dict):
                k = tuple(repr(item.get(key)) for key in keys)
                if k in seen_keys:
                    errors.append(f"{path}: duplicate entry for {dict(zip(keys, k, strict=True))}")
                seen_keys.add(k)
    if "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]", errors)


def _validate_object(value: dict, schema: Schema, path: str, errors: list[str]) -> None:
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path}.{name}: required")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{path}: fewer than {schema['minProperties']} properties")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: more than {schema['maxProperties']} properties")
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    for name, v in value.items():
        sub_path = f"{path}.{name}" if path != "<root>" else name
        if name in props:
            _validate(v, props[name], sub_path, errors)
        elif isinstance(extra, dict):
            _validate(v, extra, sub_path, errors)
        elif not preserve and extra is not True and not (schema.get("type") == "object" and not props):
            errors.append(f"{sub_path}: unknown field")


def validate_object(obj: dict, *, defaults: bool = True) -> list[str]:
    """Validate an aicenter.dev object (any of the three kinds) against its CRD schema.

    Defaults are applied first (as the API server does) unless ``defaults=False``. Also checks
    apiVersion, metadata.name and, for namespaced kinds, metadata.namespace presence.
    """
    kind = obj.get("kind")
    if kind not in NAMESPACED:
        return [f"kind: {kind!r} is not an aicenter.dev kind"]
    errors: list[str] = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion: expected {API_VERSION}, got {obj.get('apiVersion')!r}")
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not (isinstance(name, str) and len(name) <= 253 and _DNS_SUBDOMAIN.match(name)):
        errors.append(f"metadata.name: {name!r} is not a DNS subdomain name")
    if NAMESPACED[kind] and not meta.get("namespace"):
        errors.append("metadata.namespace: required for a namespaced kind (or give it when applying)")
    if not NAMESPACED[kind] and meta.get("namespace"):
        errors.append(f"metadata.namespace: {kind} is cluster-scoped")
    schema = openapi_schema(kind)
    if defaults:
        obj = apply_defaults(obj, schema)
    errors += validate(obj, schema)
    return errors
