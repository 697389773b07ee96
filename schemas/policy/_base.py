"""The base of every policy model, and the field types they share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

UINT32_MAX = 2**32 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _scalar_to_str(value: Any) -> Any:
    # Tetragon decodes YAML through sigs.k8s.io/yaml, which turns an unquoted number into the
    # string field it lands in (`values: [2, 0x40]`, `rateLimit: 5`). PyYAML has already read
    # 0x40 as 64, the same number Tetragon stores. Booleans stay errors: `yes` is a YAML trap.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# A string that YAML may have written as a bare number.
StrValue = Annotated[str, BeforeValidator(_scalar_to_str)]
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]


class PolicyModel(BaseModel):
    """Immutable, strict, camelCase in YAML, snake_case in Python; unknown keys are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # No silent coercion ("1" -> 1, true -> 1): Tetragon's decoder refuses those too.
        strict=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # `selectors:` with nothing after it is YAML null; Kubernetes (and so Tetragon)
        # treats a null field as an absent one.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    def is_set(self, name: str) -> bool:
        """Whether the field was given in the input rather than defaulted."""
        return name in self.model_fields_set
