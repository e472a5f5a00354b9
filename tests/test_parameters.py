"""The one parameter validator (nbflow/parameters.py): names, schemas and values."""

from __future__ import annotations

from typing import Any

import pytest

from nbflow.exceptions import ParameterError
from nbflow.parameters import (
    check_parameter_name,
    check_parameters_schema,
    strip_refused_keywords,
    validate_parameters,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "days": {"type": "integer", "default": 3},
        "region": {"type": "string"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "shops": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["region"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("name", ["region", "days_2", "_x", "match", "ünï"])
def test_identifiers_are_parameter_names(name: str) -> None:
    check_parameter_name(name, field="f")


@pytest.mark.parametrize(
    "name", ["", "1x", "a-b", "a b", "class", "None", "x=1;import os#", "x\n", "a.b"]
)
def test_other_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ParameterError, match="is not a valid parameter name") as err:
        check_parameter_name(name, field="parameters_schema.properties.n")
    assert err.value.field == "parameters_schema.properties.n"
    assert err.value.fix == "use a Python identifier such as region or days"


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"properties": {"x": {"type": 5}}}, "s.properties.x.type"),
        ({"properties": {"x": {"pattern": "^(a+)+$"}}}, "s.properties.x.pattern"),
        ({"patternProperties": {"a": {}}}, "s.patternProperties"),
        ({"properties": {"x": {"anyOf": [{"pattern": "a"}]}}}, "s.properties.x.anyOf.0.pattern"),
        ({"$defs": {"d": {"propertyNames": {"pattern": "a"}}}}, "s.$defs.d.propertyNames.pattern"),
        ({"properties": {"x": {"$ref": "https://example.org/x"}}}, "s.properties.x.$ref"),
        ({"properties": {"a b": {}}}, "s.properties.a b"),
        ({"properties": {"x": {}}, "required": ["for"]}, "s.required.0"),
        ({"type": "array"}, "s.type"),
        ({"properties": []}, "s.properties"),
        ({"$ref": "#"}, "s"),
    ],
)
def test_bad_schemas_are_refused_naming_the_path(schema: dict[str, Any], field: str) -> None:
    with pytest.raises(ParameterError) as err:
        check_parameters_schema(schema, field="s")
    assert err.value.field == field


def test_good_schemas_pass_and_keywords_named_like_parameters_are_names() -> None:
    assert check_parameters_schema(SCHEMA) == SCHEMA
    assert check_parameters_schema({}) == {}
    named = {"properties": {"pattern": {"type": "string"}, "x": {"$ref": "#/$defs/t"}}}
    named["$defs"] = {"t": {"type": "integer"}}
    assert check_parameters_schema(named) == named


def test_generated_patterns_are_stripped_for_storage() -> None:
    schema = {"properties": {"d": {"anyOf": [{"type": "string", "pattern": "^x"}]}}}
    assert strip_refused_keywords(schema) == {"properties": {"d": {"anyOf": [{"type": "string"}]}}}


def test_values_are_checked_by_name_presence_and_type() -> None:
    ok = validate_parameters(SCHEMA, {"region": "EU", "shops": ("a", "b")})
    assert ok == {"region": "EU", "shops": ["a", "b"]}
    with pytest.raises(ParameterError) as err:
        validate_parameters(SCHEMA, {"region": "EU", "days": "x"})
    assert err.value.field == "parameters.days"
    assert str(err.value) == (
        "parameters.days='x': is not of type integer. "
        "expected integer, as in the flow's default days = 3"
    )
    with pytest.raises(ParameterError, match="is not of type integer or null"):
        validate_parameters(SCHEMA, {"region": "EU", "limit": "x"})
    with pytest.raises(ParameterError) as err:
        validate_parameters(SCHEMA, {"region": "EU", "shops": ["a", 1]})
    assert err.value.field == "parameters.shops.1"
    with pytest.raises(ParameterError, match="missing required parameter") as err:
        validate_parameters(SCHEMA, {}, field="body.parameters")
    assert err.value.field == "body.parameters.region"
    assert validate_parameters(SCHEMA, {}, partial=True) == {}
    with pytest.raises(ParameterError, match="its parameters are: days, region") as err:
        validate_parameters(SCHEMA, {"regoin": "EU"}, flow_name="f")
    assert "unknown parameter of flow 'f'" in str(err.value)


def test_a_flow_without_parameters_takes_none() -> None:
    for schema in ({}, {"type": "object", "properties": {}, "additionalProperties": False}):
        assert validate_parameters(schema, {}) == {}
        with pytest.raises(ParameterError, match="flow 'f' takes no parameters"):
            validate_parameters(schema, {"x": 1}, flow_name="f")


def test_additional_properties_open_the_flow_to_other_identifiers_only() -> None:
    schema = {"properties": {"a": {"type": "integer"}}, "additionalProperties": True}
    assert validate_parameters(schema, {"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
    with pytest.raises(ParameterError, match="is not a valid parameter name"):
        validate_parameters(schema, {"b;import os": 1})


def test_check_types_false_leaves_conversion_to_the_caller() -> None:
    schema = {"properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert validate_parameters(schema, {"n": "3"}, check_types=False) == {"n": "3"}
    with pytest.raises(ParameterError, match="missing"):
        validate_parameters(schema, {}, check_types=False)


def test_deep_values_and_ref_cycles_are_refused_not_crashed() -> None:
    deep: Any = 1
    for _ in range(900):
        deep = [deep]
    with pytest.raises(ParameterError, match="deeper than 32") as err:
        validate_parameters({"properties": {"x": {}}}, {"x": deep})
    assert err.value.field == "parameters.x"
    cycle = {"properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}
    with pytest.raises(ParameterError, match="refers to itself"):
        check_parameters_schema(cycle)
    with pytest.raises(ParameterError, match="refers to itself"):
        validate_parameters(cycle, {"x": 1})
