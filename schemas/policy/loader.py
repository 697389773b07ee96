"""Policy YAML -> models, with every failure turned into a :class:`PolicyError` whose paths are
the YAML keys (``spec.kprobes[0].selectors[1].matchArgs[0].operator``) and whose problems carry
the line and column they point to."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.error import MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import PolicyError, Problem
from .model import API_VERSION, KINDS, TracingPolicy, TracingPolicyNamespaced

Policy = TracingPolicy | TracingPolicyNamespaced
_MODELS: dict[str, type[Policy]] = {
    "TracingPolicy": TracingPolicy,
    "TracingPolicyNamespaced": TracingPolicyNamespaced,
}
# Tetragon keys Ocellus does not implement: refused by name rather than as unknown keys.
_UNSUPPORTED_KEYS = {
    "fentries": "fentry hooks",
    "selectorsMacros": "selector macros",
    "data": "data fields",
    "matchData": "matchData filters",
}
# A document may use YAML aliases, but not to blow up into more nodes than this.
MAX_EXPANDED_NODES = 100_000
_UNNAMED = "<unnamed>"


def load_policy(
    text: str | bytes, *, default_namespace: str = "default", source: str | None = None
) -> Policy:
    """The one policy in ``text``. A TracingPolicyNamespaced without ``metadata.namespace``
    gets ``default_namespace``, as ``kubectl apply -n`` gives it. ``source`` (a file name)
    names the policy in errors raised before its name is known."""
    policies = _load(text, default_namespace=default_namespace, source=source)
    if len(policies) != 1:
        found = f"expected one policy document, found {len(policies)} (use load_policies)"
        raise PolicyError(source or _UNNAMED, [Problem("", found)])
    return policies[0]


def load_policies(
    text: str | bytes, *, default_namespace: str = "default", source: str | None = None
) -> list[Policy]:
    """Every policy of a multi-document YAML stream (``---`` between documents); empty
    documents are skipped. The first document that fails raises, naming its position."""
    return _load(text, default_namespace=default_namespace, source=source)


def _load(text: str | bytes, *, default_namespace: str, source: str | None) -> list[Policy]:
    documents = list(_documents(text, source))
    numbered = len(documents) > 1
    policies: list[Policy] = []
    first_use: dict[tuple[str, str | None, str], int] = {}
    for number, (data, positions) in enumerate(documents, start=1):
        document = number if numbered else None
        policy = _validate(data, positions, default_namespace, source, document)
        key = (policy.kind, policy.metadata.namespace, policy.metadata.name)
        if key in first_use:
            problem = Problem("metadata.name", f"already used by document {first_use[key]}")
            raise PolicyError(
                policy.metadata.name, [_locate(problem, positions)], document=document
            )
        first_use[key] = number
        policies.append(policy)
    return policies


def _validate(
    data: Any,
    positions: Mapping[str, tuple[int, int]],
    default_namespace: str,
    source: str | None,
    document: int | None,
) -> Policy:
    name = _name_of(data) or source or _UNNAMED

    def fail(problems: Sequence[Problem]) -> PolicyError:
        return PolicyError(name, [_locate(p, positions) for p in problems], document=document)

    if not isinstance(data, dict):
        shape = "a policy document is a mapping with apiVersion, kind, metadata and spec"
        raise fail([Problem("", shape)])
    # Checked first: a document of another API or kind would only produce noise below.
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        wrong = (
            "required field is missing"
            if api_version is None
            else f"{api_version!r} is not supported"
        )
        raise fail([Problem("apiVersion", f"{wrong} (supported: {API_VERSION})")])
    kind = data.get("kind")
    if kind not in _MODELS:
        wrong = "required field is missing" if kind is None else f"{kind!r} is not supported"
        raise fail([Problem("kind", f"{wrong} (supported: {', '.join(KINDS)})")])
    model = _MODELS[kind]
    metadata = data.get("metadata")
    if model is TracingPolicyNamespaced and isinstance(metadata, dict):
        data = {**data, "metadata": {"namespace": default_namespace, **_present(metadata)}}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise fail(list(_problems(e, model))) from None


def _present(mapping: dict[Any, Any]) -> dict[Any, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _problems(error: ValidationError, model: type[BaseModel]) -> Iterator[Problem]:
    for details in error.errors():
        cause = details.get("ctx", {}).get("error")
        if isinstance(cause, PolicyError):  # raised by the semantic checks of a parsed policy
            yield from cause.problems
        else:
            yield Problem(_path(details["loc"]), _message(details, model))


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path = _join(path, part)
    return path


def _join(path: str, part: int | str) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


_TYPE_NAMES = {
    "string_type": "a string", "int_type": "an integer", "bool_type": "true or false",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "float_type": "a number",
}  # fmt: skip


def _message(details: ErrorDetails, model: type[BaseModel]) -> str:
    kind, ctx, value = details["type"], details.get("ctx", {}), details.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(details["loc"], model)
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {value})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (got {value})"
    if kind == "literal_error":
        return f"{value!r} is not supported (supported: {ctx['expected'].replace(' or ', ', ')})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", details["msg"]))
    return details["msg"]


_VALUE_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                list: "a list", dict: "a mapping", type(None): "null"}  # fmt: skip


def _describe(value: object) -> str:
    kind = _VALUE_KINDS.get(type(value), type(value).__name__)
    if not isinstance(value, str | int | float):
        return kind
    shown = repr(value)
    return f"{kind} ({shown if len(shown) <= 60 else shown[:57] + '...'})"


def _unknown_field(loc: Sequence[int | str], model: type[BaseModel]) -> str:
    key = str(loc[-1])
    if key in _UNSUPPORTED_KEYS:
        return f"{_UNSUPPORTED_KEYS[key]} ({key}) are a Tetragon feature Ocellus does not support"
    parent = _model_at(model, loc[:-1])
    if parent is None:
        return "unknown field"
    known = [info.alias or name for name, info in parent.model_fields.items()]
    if close := difflib.get_close_matches(key, known, n=1, cutoff=0.6):
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field (known: {', '.join(known)})"


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (list indexes skipped)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        current = _model_in(field.annotation) if field is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
    return None


def _locate(problem: Problem, positions: Mapping[str, tuple[int, int]]) -> Problem:
    """The problem with the line/column of its path, or of the nearest enclosing key."""
    path = problem.path
    while path and path not in positions:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    if path not in positions:
        return problem
    line, column = positions[path]
    return dataclasses.replace(problem, line=line, column=column)


def _name_of(data: Any) -> str | None:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def _documents(
    text: str | bytes, source: str | None
) -> Iterator[tuple[Any, dict[str, tuple[int, int]]]]:
    """(data, path -> (line, column)) for each non-empty document."""
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
                continue
            if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
                too_big = f"more than {MAX_EXPANDED_NODES} YAML nodes once aliases are expanded"
                raise PolicyError(source or _UNNAMED, [Problem("", too_big)])
            positions: dict[str, tuple[int, int]] = {}
            duplicates: list[Problem] = []
            _index_positions(node, "", positions, duplicates, set())
            data = loader.construct_document(node)
            if duplicates:
                # YAML forbids duplicate keys but PyYAML keeps the last one: a policy whose
                # second `selectors:` silently replaced the first would filter something else
                # than its author read.
                raise PolicyError(_name_of(data) or source or _UNNAMED, duplicates)
            yield data, positions
    except MarkedYAMLError as e:
        raise PolicyError(source or _UNNAMED, [_yaml_problem(e)]) from None
    except RecursionError:
        # PyYAML composes recursively; a document nested thousands deep is no policy.
        raise PolicyError(source or _UNNAMED, [Problem("", "YAML nested too deeply")]) from None
    except yaml.YAMLError as e:
        raise PolicyError(source or _UNNAMED, [Problem("", f"not valid YAML: {e}")]) from None
    finally:
        loader.dispose()


def _yaml_problem(error: MarkedYAMLError) -> Problem:
    mark = error.problem_mark or error.context_mark
    message = " ".join(
        part for part in (error.problem, f"({error.context})" if error.context else None) if part
    )
    if mark is None:
        return Problem("", message)
    line, column = mark.line + 1, mark.column + 1
    return Problem(f"line {line}, column {column}", message, line=line, column=column)


def _expanded_size(node: Node, sizes: dict[int, int]) -> int:
    # Memoised by node identity: an alias is the same node object, so this stays linear while
    # measuring what validation would walk.
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _index_positions(
    node: Node,
    path: str,
    out: dict[str, tuple[int, int]],
    duplicates: list[Problem],
    seen: set[int],
) -> None:
    """Fill ``out`` with path -> (line, column) of every key and item; report duplicate keys."""
    if id(node) in seen:
        return  # an alias: its positions are those of the anchor
    seen.add(id(node))
    if isinstance(node, MappingNode):
        first: dict[tuple[str, str], Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            child = _join(path, key_node.value)
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            earlier = first.setdefault((key_node.tag, key_node.value), key_node)
            if earlier is not key_node:
                first_line = earlier.start_mark.line + 1
                duplicates.append(
                    Problem(child, f"duplicate key (first at line {first_line})", line, column)
                )
                continue
            out[child] = (line, column)
            _index_positions(value_node, child, out, duplicates, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            child = _join(path, i)
            out.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _index_positions(item, child, out, duplicates, seen)
