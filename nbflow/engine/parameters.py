"""Flow parameters of a ``@flow`` function: a JSON schema from its signature, and coercion.

Which names a run may pass (unknown, missing, not identifiers) is decided by the one
validator, :func:`nbflow.parameters.validate_parameters`, on the schema built here — the
same check the server and notebooks make.  Python signatures can be richer than JSON
(``datetime``, ``Decimal``, classes), so the values themselves are converted by a pydantic
model built once per function: ``"3"`` becomes ``3`` for an ``int`` parameter (what
``nbflow run -p n=3`` passes), and a value that cannot be converted raises
:class:`~nbflow.exceptions.ParameterError` naming the field, the value and the type.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic

from nbflow.exceptions import ParameterError
from nbflow.parameters import strip_refused_keywords, validate_parameters

__all__ = ["ParameterModel"]


class ParameterModel:
    """Validation and schema of one function's parameters."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        fields: dict[str, Any] = {}
        self.var_kwargs = False
        for name, param in self.signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                self.var_kwargs = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                continue
            annotation = hints.get(name, Any)
            default = ... if param.default is param.empty else param.default
            fields[name] = (annotation, default)
        config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra="allow")
        self.model = pydantic.create_model(  # type: ignore[call-overload]
            f"{getattr(fn, '__name__', 'flow')}_parameters", __config__=config, **fields
        )
        self.fields = fields
        self._schema: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        """Return the JSON schema (``properties`` with types and defaults, ``required``)."""
        if self._schema is None:
            self._schema = self._build_schema()
        return self._schema

    def _build_schema(self) -> dict[str, Any]:
        try:
            schema: dict[str, Any] = self.model.model_json_schema()
        except Exception:
            # Some annotation or default has no JSON form: describe what we can.
            props: dict[str, Any] = {}
            for name, (_ann, default) in self.fields.items():
                props[name] = {"title": name}
                if default is not ...:
                    props[name]["default"] = repr(default)
            required = [n for n, (_a, d) in self.fields.items() if d is ...]
            schema = {"type": "object", "properties": props, "required": required}
        schema.pop("title", None)
        # Only **kwargs opens the flow to other names (pydantic's extra="allow" says more).
        schema["additionalProperties"] = self.var_kwargs
        # The server refuses regexes in stored schemas; pydantic's own checks still apply.
        return strip_refused_keywords(schema)  # type: ignore[no-any-return]

    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Coerce and check ``values``; return the complete parameters (defaults filled in)."""
        flow_name = getattr(self.fn, "__name__", None)
        validate_parameters(self.schema(), values, flow_name=flow_name, check_types=False)
        try:
            model = self.model.model_validate(values)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(["parameters", *(str(p) for p in error.get("loc", ()))])
            name = str(error.get("loc", ("",))[0])
            annotation = self.fields.get(name, (Any, None))[0]
            expected = getattr(annotation, "__name__", None) or str(annotation)
            raise ParameterError(
                field,
                error.get("input"),
                f"{error.get('msg', 'invalid value')}",
                f"expected {expected}",
            ) from None
        result = {name: getattr(model, name) for name in self.fields}
        if self.var_kwargs:
            result.update({k: v for k, v in values.items() if k not in self.fields})
        return result

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names (``TypeError`` naming the problem)."""
        bound = self.signature.bind(*args, **kwargs)
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if self.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            else:
                out[name] = value
        return out

    def call_arguments(self, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Split validated parameters into positional and keyword arguments for ``fn``."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, param in self.signature.parameters.items():
            if param.kind is param.POSITIONAL_ONLY:
                args.append(parameters[name])
            elif param.kind is param.VAR_POSITIONAL:
                args.extend(parameters.get(name, ()))
            elif param.kind is not param.VAR_KEYWORD and name in parameters:
                kwargs[name] = parameters[name]
        kwargs.update({k: v for k, v in parameters.items() if k not in self.signature.parameters})
        return tuple(args), kwargs
