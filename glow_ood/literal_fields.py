"""The allowed values of a module's `typing.Literal` fields, declared once in its annotation.

model_kinds reads them to validate configs before any compute; the modules check them
again on construction (for users who build a layer directly), from the same annotation.
"""
import dataclasses
import typing


def choices(cls: type, field: str) -> tuple | None:
  """The values a Literal-annotated field of cls allows, else None."""
  annotation = typing.get_type_hints(cls).get(field)
  if typing.get_origin(annotation) is typing.Literal:
    return typing.get_args(annotation)
  return None


def check(module) -> None:
  """Raises ValueError naming the field and its allowed values for any Literal field of
  the (dataclass) module whose value is not one of them."""
  cls = type(module)
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    annotation = hints.get(field.name)
    if typing.get_origin(annotation) is not typing.Literal:
      continue
    allowed = typing.get_args(annotation)
    if getattr(module, field.name) not in allowed:
      raise ValueError(f'{cls.__name__}.{field.name} must be one of {allowed}, got '
                       f'{getattr(module, field.name)!r}.')
