"""What can be named in a config, described from the code itself: the registered methods with one line each, and
a method's params (type, default, description) from its pydantic params model (`kdforge methods`, `describe`)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    description: str


def method_catalog() -> dict[str, str]:
    """Every registered method name -> one line: its module's first sentence, or its class's where a module
    holds several methods (the pseudo-label family)."""
    import kdforge.methods  # noqa: F401  (registers the methods)
    from kdforge.registry import METHODS

    modules = [cls.__module__ for cls in METHODS.values()]
    out = {}
    for name, cls in sorted(METHODS.items()):
        shared = modules.count(cls.__module__) > 1
        doc = cls.__dict__.get("__doc__") if shared else sys.modules[cls.__module__].__doc__
        out[name] = _first_sentence(doc or "")
    return out


def method_params(name: str) -> list[Param]:
    """The params of method `name` (a ConfigError listing the registered ones when it is not registered)."""
    import kdforge.methods  # noqa: F401  (registers the methods)
    from kdforge.registry import METHODS

    cls = METHODS.lookup(name, "method")
    return [Param(key, _type_name(f.annotation), _default(f), f.description or "")
            for key, f in cls.Params.model_fields.items()]


_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\bEq)(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z])")


def _first_sentence(doc: str, width: int = 110) -> str:
    """The first sentence ("et al. 2015" is not an end), cut to `width` characters for one line."""
    text = " ".join(doc.split())
    end = _SENTENCE_END.search(text)
    text = text[: end.start() + 1] if end else text
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace(
        "typing.", "")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "(required)" if field.default_factory is None else repr(field.default_factory())
    return repr(field.default)


def model_catalog() -> dict[str, str]:
    """Every registered model name -> its params with their defaults on one line (`kdforge models`), read from
    the builder's signature as the config check reads it; set them with student.params.KEY=VALUE."""
    import kdforge.models  # noqa: F401  (registers the models)
    from kdforge.options import signature_model
    from kdforge.registry import MODELS

    out = {}
    for name, builder in sorted(MODELS.items()):
        fields = signature_model(builder).model_fields.items()
        out[name] = ", ".join(f"{key}={_default(f)}" for key, f in fields) or "no params"
    return out
