"""pydantic model -> structural OpenAPI v3 schema for a CustomResourceDefinition.

We walk ``model_fields`` ourselves instead of using ``model_json_schema()``: a CRD
schema must be structural (every node typed, no ``$ref``/``anyOf``), and a field with
two accepted spellings (``AliasChoices``) needs one property per spelling.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Literal, Union

import annotated_types
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"


def spellings(name: str, field: FieldInfo) -> list[str]:
    """Every key a field may be written as in a manifest."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    if isinstance(alias, str):
        return [alias]
    return [field.alias or name]


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    rules: list[dict[str, str]] = []
    for name, field in model.model_fields.items():
        keys = spellings(name, field)
        prop = field_schema(field)
        for key in keys:  # a copy per spelling: no shared nodes (YAML anchors) in the CRD
            properties[key] = copy.deepcopy(prop)
        if len(keys) > 1:
            both = " && ".join(f"has(self.{_cel_name(k)})" for k in keys)
            rules.append({"rule": f"!({both})", "message": f"set only one of {', '.join(keys)}"})
        if field.is_required():
            if len(keys) == 1:
                required.append(keys[0])
            else:
                anyof = " || ".join(f"has(self.{_cel_name(k)})" for k in keys)
                rules.append({"rule": anyof, "message": f"{' or '.join(keys)} is required"})
    schema: dict[str, Any] = {"type": "object"}
    doc = (model.__doc__ or "").strip()
    if doc and model.__module__ != "pydantic.main":
        schema["description"] = doc.split("\n\n")[0].replace("\n", " ")
    if properties:
        schema["properties"] = properties
    if required:
        schema["required"] = sorted(required)
    extra = model.model_config.get("json_schema_extra")
    if isinstance(extra, dict):
        rules.extend(extra.get("x-kubernetes-validations", []))  # type: ignore[arg-type]
        schema.update({k: v for k, v in extra.items() if k != "x-kubernetes-validations"})
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def field_schema(field: FieldInfo) -> dict[str, Any]:
    schema = type_schema(field.annotation)
    for meta in field.metadata:
        schema.update(_constraint(meta, schema.get("type")))
    if field.description:
        schema["description"] = field.description
    else:  # a list or map of objects: what each element is
        element = schema.get("items") or schema.get("additionalProperties")
        if isinstance(element, dict) and element.get("description"):
            schema["description"] = element["description"]
    extra = field.json_schema_extra
    if isinstance(extra, dict):
        for key, value in extra.items():
            if key == "x-kubernetes-validations":
                schema.setdefault(key, []).extend(value)
            else:
                schema[key] = value
        if extra.get(PRESERVE) and schema.get("type") is None:
            schema.pop("type", None)
    return schema


def type_schema(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        for meta in args[1:]:
            schema.update(_constraint(meta, schema.get("type")))
        return schema
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return type_schema(members[0])
        kinds = {_literal_or_type(m) for m in members}
        if kinds == {"string", "integer"}:
            return {INT_OR_STRING: True}
        raise TypeError(f"unsupported union for a CRD schema: {annotation!r}")
    if origin is Literal:
        values = list(args)
        if all(isinstance(v, str) for v in values):
            return {"type": "string", "enum": values}
        if all(isinstance(v, bool) for v in values):
            return {"type": "boolean", "enum": values}
        if all(isinstance(v, int) for v in values):
            return {"type": "integer", "enum": values}
        raise TypeError(f"mixed Literal: {annotation!r}")
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": type_schema(args[0]) if args else {PRESERVE: True}}
    if origin is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": type_schema(value)}
    if annotation is Any or annotation is object:
        return {PRESERVE: True}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        return {"type": scalar}
    if annotation is dict:
        return {"type": "object", PRESERVE: True}
    if annotation is list:
        return {"type": "array", "items": {PRESERVE: True}}
    raise TypeError(f"unsupported type for a CRD schema: {annotation!r}")


_SCALARS: dict[Any, str] = {str: "string", int: "integer", bool: "boolean", float: "number"}


def _literal_or_type(annotation: Any) -> str | None:
    return type_schema(annotation).get("type")


def _constraint(meta: Any, kind: str | None) -> dict[str, Any]:
    """Translate pydantic/annotated_types constraints to OpenAPI keywords."""
    if isinstance(meta, annotated_types.Ge):
        return {"minimum": meta.ge}
    if isinstance(meta, annotated_types.Gt):
        return {"minimum": meta.gt, "exclusiveMinimum": True}
    if isinstance(meta, annotated_types.Le):
        return {"maximum": meta.le}
    if isinstance(meta, annotated_types.Lt):
        return {"maximum": meta.lt, "exclusiveMaximum": True}
    if isinstance(meta, annotated_types.MinLen):
        return {{"array": "minItems", "object": "minProperties"}.get(kind or "", "minLength"): meta.min_length}
    if isinstance(meta, annotated_types.MaxLen):
        return {{"array": "maxItems", "object": "maxProperties"}.get(kind or "", "maxLength"): meta.max_length}
    pattern = getattr(meta, "pattern", None)
    if isinstance(pattern, str):
        return {"pattern": pattern}
    return {}


def _cel_name(key: str) -> str:
    # CEL escapes property names that are not identifiers (e.g. with '-' or '.').
    if key.replace("_", "a").isalnum() and not key[0].isdigit():
        return key
    return "__" + key.replace("_", "__underscores__").replace("-", "__dash__").replace(".", "__dot__") + "__"
