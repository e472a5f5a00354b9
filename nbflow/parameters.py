"""The one parameter validator: parameter names, flow parameter schemas and run parameters.

Every path that accepts flow parameters (flow registration, ``%%flow`` cells, deployments,
runs, the CLI's ``-p``, the executor before it injects them, ``@flow`` functions) decides
here, so they cannot disagree.  Three rules protect the server and the kernel:

- a parameter name is a Python identifier and not a keyword: names are written into an
  injected code cell (``name = <literal>``), so anything else could be code;
- a parameters schema holds no regular expression (``pattern``, ``patternProperties``) and
  no remote ``$ref``: a user-supplied regex can backtrack for seconds on a short input and
  would stall the whole server, a remote reference would make the server fetch a URL;
- a schema is a valid Draft 2020-12 JSON schema, checked when the flow is registered, so
  a bad ``type`` is a 400 then, not a 500 on every later run.
"""

from __future__ import annotations

import keyword
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from nbflow.exceptions import ParameterError

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_VALUE_DEPTH",
    "REFUSED_KEYWORDS",
    "check_parameter_name",
    "check_parameters_schema",
    "strip_refused_keywords",
    "validate_parameters",
]

#: Schema keywords refused anywhere in a parameters schema (they carry regular expressions).
REFUSED_KEYWORDS = frozenset({"pattern", "patternProperties"})
#: How deeply subschemas may nest in a parameters schema.
MAX_SCHEMA_DEPTH = 32
#: How deeply lists and objects may nest in one parameter value.
MAX_VALUE_DEPTH = 32

# Keywords whose value is one subschema, a list of subschemas, or a name -> subschema map.
_ONE = (
    "additionalProperties",
    "additionalItems",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_NAMED = ("properties", "$defs", "definitions", "dependentSchemas", "dependencies")
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")


def skip_iri_format_grammar() -> None:
    """Keep jsonschema from compiling its RFC 3987 grammar (over 2 s on a loaded machine).

    jsonschema imports ``rfc3987_syntax`` for the ``iri`` formats when it loads its format
    checkers, and builds a Lark parser then; without the module it simply has no ``iri``
    checker.  nbflow validates parameters and notebooks without format checking, so an
    nbflow process (the CLI, ``nbflow execute``) never needs it.  Called before jsonschema
    is first imported; harmless after.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _validator_class() -> Any:
    """Import jsonschema on first use: it costs over a second (its format checkers), which
    the CLI and a kernel's ``%%flow`` cell would otherwise pay just for importing nbflow."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    return Draft202012Validator


def check_parameter_name(name: str, *, field: str) -> None:
    """Refuse a parameter name that is not a Python identifier or is a keyword."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ParameterError(
            field,
            name,
            "is not a valid parameter name",
            "use a Python identifier such as region or days",
        )


def _subschemas(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, subschema)`` of each schema nested directly in ``schema``."""
    for key in _ONE:
        if key in schema and not isinstance(schema[key], list):
            yield f"{path}.{key}", schema[key]
    for key in _MANY:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield f"{path}.{key}.{i}", sub
    for key in _NAMED:
        if isinstance(schema.get(key), Mapping):
            for name, sub in schema[key].items():
                # dependencies' values may also be lists of names (not schemas).
                if not isinstance(sub, list):
                    yield f"{path}.{key}.{name}", sub


def _check_keywords(schema: Any, path: str, depth: int) -> None:
    if not isinstance(schema, Mapping):
        return  # true/false schemas; anything else is reported by check_schema
    if depth > MAX_SCHEMA_DEPTH:
        raise ParameterError(
            path, "...", f"nests deeper than {MAX_SCHEMA_DEPTH} levels", "flatten the schema"
        )
    refused = sorted(REFUSED_KEYWORDS & set(schema))
    if refused:
        raise ParameterError(
            f"{path}.{refused[0]}",
            schema[refused[0]],
            "is not allowed in a parameters schema (a regular expression could stall the server)",
            "remove it; check the format in the notebook instead",
        )
    for key in _REFS:
        ref = schema.get(key)
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            raise ParameterError(
                f"{path}.{key}",
                ref,
                "is not a local reference",
                'only references inside the schema are allowed, like "#/$defs/Name"',
            )
    for sub_path, sub in _subschemas(schema, path):
        _check_keywords(sub, sub_path, depth + 1)


def check_parameters_schema(
    schema: Mapping[str, Any], *, field: str = "parameters_schema"
) -> dict[str, Any]:
    """Check a flow's parameters schema before it is stored; return it as a dict.

    An empty schema means a flow without parameters.  Otherwise it is a JSON schema of an
    object whose property names are parameter names, valid under Draft 2020-12, without
    regular expressions or remote references.
    """
    if not isinstance(schema, Mapping):
        raise ParameterError(field, schema, "is not a JSON object", 'use {"properties": {...}}')
    _check_keywords(schema, field, 0)
    kind = schema.get("type", "object")
    if kind != "object":
        raise ParameterError(
            f"{field}.type", kind, 'must be "object"', "a flow's parameters are named values"
        )
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ParameterError(
            f"{field}.properties", properties, "is not a JSON object", "map names to schemas"
        )
    for name in properties:
        check_parameter_name(name, field=f"{field}.properties.{name}")
    required = schema.get("required", [])
    if isinstance(required, list):
        for i, name in enumerate(required):
            if isinstance(name, str):
                check_parameter_name(name, field=f"{field}.required.{i}")
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped,unused-ignore]

    try:
        _validator_class().check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise ParameterError(
            f"{field}.{where}" if where else field,
            exc.instance,
            f"is not a valid JSON schema: {exc.message}",
            "see https://json-schema.org/draft/2020-12 for the keywords and their values",
        ) from None
    # A $ref cycle fails here rather than on every run.
    _errors(schema, dict.fromkeys(properties), field)
    return dict(schema)


def _errors(schema: Mapping[str, Any], values: Any, field: str) -> list[Any]:
    """Return the jsonschema errors of ``values`` (a $ref that loops is the schema's fault)."""
    try:
        return list(_validator_class()(schema).iter_errors(values))
    except RecursionError:
        raise ParameterError(
            field, "$ref", "refers to itself without end", "break the $ref cycle"
        ) from None


def strip_refused_keywords(schema: Any) -> Any:
    """Return a copy of a generated schema without the refused keywords.

    For schemas nbflow generates itself (pydantic's schema of a ``@flow`` signature
    describes ``Decimal`` strings with a ``pattern``): the flow's own code still enforces
    them, the stored schema just does not carry the regex.
    """
    if isinstance(schema, list):
        return [strip_refused_keywords(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in REFUSED_KEYWORDS:
            continue
        if key in _NAMED and isinstance(value, Mapping):
            out[key] = {k: strip_refused_keywords(v) for k, v in value.items()}
        elif key in _ONE or key in _MANY:
            out[key] = strip_refused_keywords(value)
        else:
            out[key] = value
    return out


def _depth(value: Any, limit: int) -> bool:
    """Return True when ``value`` nests lists/objects deeper than ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level >= limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _expected(prop: Any) -> str:
    """Describe the type a property expects: ``integer``, ``integer or null``, ``any``."""
    if not isinstance(prop, Mapping):
        return "any"
    kind = prop.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list):
            return " or ".join(_expected(sub) for sub in prop[key])
    if "$ref" in prop:
        return "object"
    if "enum" in prop:
        return "one of " + ", ".join(repr(v) for v in prop["enum"])
    return "any"


def _flow_text(flow_name: str | None) -> str:
    return f"flow {flow_name!r}" if flow_name else "this flow"


def validate_parameters(
    schema: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    field: str = "parameters",
    flow_name: str | None = None,
    partial: bool = False,
    check_types: bool = True,
) -> dict[str, Any]:
    """Check ``values`` against a flow's parameters schema; return them (tuples as lists).

    Names must be identifiers; unknown names are refused listing the known ones (unless the
    schema's ``additionalProperties`` allows more); required names must be present unless
    ``partial`` (a deployment's defaults).  A schema without properties accepts nothing.
    ``check_types=False`` is for callers that convert values themselves (a ``@flow``
    function's pydantic signature).  Errors name ``<field>.<name>``, the value and the type.
    """
    if not isinstance(values, Mapping):
        raise ParameterError(field, values, "is not a JSON object", "map names to values")
    properties: Mapping[str, Any] = schema.get("properties") or {}
    more = schema.get("additionalProperties", False)
    open_ended = more is True or isinstance(more, Mapping)
    for name, value in values.items():
        check_parameter_name(name, field=f"{field}.{name}")
        if name not in properties and not open_ended:
            fix = (
                f"its parameters are: {', '.join(properties)}"
                if properties
                else f"{_flow_text(flow_name)} takes no parameters"
            )
            raise ParameterError(
                f"{field}.{name}", value, f"unknown parameter of {_flow_text(flow_name)}", fix
            )
        if _depth(value, MAX_VALUE_DEPTH):
            raise ParameterError(
                f"{field}.{name}",
                "...",
                f"nests lists or objects deeper than {MAX_VALUE_DEPTH} levels",
                "pass a flatter value",
            )
    if not partial:
        required = schema.get("required") or []
        for name in required:
            if name not in values:
                raise ParameterError(
                    f"{field}.{name}",
                    None,
                    "missing required parameter (it has no default)",
                    "give it a value",
                )
    out = {name: _jsonable(value) for name, value in values.items()}
    if not check_types or not properties:
        return out
    checked = {k: v for k, v in schema.items() if k not in ("required", "additionalProperties")}
    errors = _errors(checked, out, "parameters_schema")
    error = min(errors, key=lambda e: [str(p) for p in e.absolute_path], default=None)
    if error is None:
        return out
    path = [str(p) for p in error.absolute_path]
    name = path[0] if path else ""
    prop = properties.get(name, {})
    expected = _expected(prop)
    fix = f"expected {expected}"
    if isinstance(prop, Mapping) and "default" in prop:
        fix += f", as in the flow's default {name} = {prop['default']!r}"
    problem = (
        f"is not of type {expected}"
        if error.validator in ("type", "anyOf", "oneOf") and len(path) == 1
        else str(error.message)
    )
    return_field = ".".join([field, *path]) if path else field
    raise ParameterError(return_field, error.instance, problem, fix)
