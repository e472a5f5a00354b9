"""Check run and deployment parameters against a flow's parameters schema (JSON schema)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

from nbflow.exceptions import ParameterError

__all__ = ["check_parameters"]


def check_parameters(
    schema: dict[str, Any],
    parameters: dict[str, Any],
    *,
    field: str,
    flow_name: str,
    partial: bool = False,
) -> None:
    """Raise ``ParameterError`` naming ``<field>.<name>`` for an unknown, missing or bad value.

    ``partial`` (deployment defaults) skips the check for missing required parameters.
    A flow without a schema (no ``properties``) accepts anything.
    """
    properties = schema.get("properties")
    if not properties:
        return
    unknown = sorted(set(parameters) - set(properties))
    if unknown:
        raise ParameterError(
            f"{field}.{unknown[0]}",
            parameters[unknown[0]],
            f"is not a parameter of flow {flow_name!r}",
            f"its parameters are: {', '.join(properties)}",
        )
    checked = dict(schema)
    if partial:
        checked.pop("required", None)
    errors = sorted(
        Draft202012Validator(checked).iter_errors(parameters), key=lambda e: list(e.path)
    )
    if errors:
        error = errors[0]
        path = ".".join(str(p) for p in error.path)
        if error.validator == "required":
            missing = next((r for r in checked.get("required", []) if r not in parameters), "")
            raise ParameterError(
                f"{field}.{missing}", None, "is required and has no default", "give a value"
            )
        raise ParameterError(
            f"{field}.{path}" if path else field,
            error.instance,
            error.message,
            "see the flow's parameters_schema for the expected type",
        )
