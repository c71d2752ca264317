"""The JSON round trip shared by the frozen-dataclass configs of ``empirics`` (DDPM, classifier, filter)."""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar


class JsonConfig:
    """Mixin for a frozen dataclass config: ``to_json`` (enums as their values; tuples stay tuples, which
    JSON writes as lists and checkpoints compare as stored) and ``from_json`` (unknown keys refused, the
    fields named in ``TUPLE_FIELDS`` turned back into tuples)."""

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    KIND: ClassVar[str] = "config"

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in out.items()}

    @classmethod
    def from_json(cls, obj: dict):
        if not isinstance(obj, dict):
            raise ValueError(f"a {cls.KIND} must be a mapping, got {type(obj).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} keys {unknown}; allowed: {sorted(names)}")
        obj = dict(obj)
        for k in cls.TUPLE_FIELDS:
            if k in obj:
                obj[k] = tuple(obj[k])
        return cls(**obj)
