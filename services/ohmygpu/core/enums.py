"""Protobuf enum values as the short lower-case words users see ("running", "gguf", "chat")."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def enum_name(enum: EnumTypeWrapper, value: int) -> str:
    """`JobState.JOB_STATE_RUNNING` -> "running": the value's name without the enum's prefix
    (buf's style: every value starts with the prefix its `_UNSPECIFIED` zero value has).
    A value this build does not know (from a newer peer) is its number."""
    zero = enum.DESCRIPTOR.values_by_number.get(0)
    prefix = zero.name.removesuffix("UNSPECIFIED") if zero is not None else ""
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)
