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


def config_from_preset(cls, base: dict, overrides: dict, *, attention_follows_channels: bool = True):
    """The one config-from-preset builder of the DDPM, guidance-classifier and filter configs.

    ``base`` holds the preset's fields; ``overrides`` replace them (``None`` values are ignored, unknown
    names refused). With ``attention_follows_channels``, overriding ``channels`` without ``attention``
    turns attention off at every level (the preset's flags are for its own number of levels). The
    fields named in ``cls.TUPLE_FIELDS`` become tuples.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown {cls.KIND} fields {bad}; allowed: {sorted(names)}")
    fields = dict(base)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if attention_follows_channels and "channels" in overrides and "attention" not in overrides:
        fields["attention"] = (False,) * len(fields["channels"])
    for k in cls.TUPLE_FIELDS:
        if k in fields:
            fields[k] = tuple(fields[k])
    return cls(**fields)


def check_unet_shape(channels, attention, norm_num_groups: int, size: int | None = None, *,
                     attention_may_be_empty: bool = False, level: str = "level") -> None:
    """The one shape check of a U-Net (or U-Net encoder) config: positive channel widths, one attention
    flag per level (or none at all, when ``attention_may_be_empty``), GroupNorm groups dividing every
    width and, given ``size``, an image side divisible by 2^(levels - 1) (each level but the last halves it)."""
    from empirics._checks import check_int

    if not channels or any(check_int("channels", c, 1) <= 0 for c in channels):
        raise ValueError(f"channels must be positive integers, got {channels!r}")
    if not (attention_may_be_empty and not attention) and len(attention) != len(channels):
        allowed = "be () or " if attention_may_be_empty else ""
        raise ValueError(f"attention must {allowed}give one flag per {level} ({len(channels)}), got {attention!r}")
    if any(not isinstance(a, bool) for a in attention):
        raise ValueError(f"attention flags must be True or False, got {attention!r}")
    groups = check_int("norm_num_groups", norm_num_groups, 1)
    bad = [c for c in channels if c % groups]
    if bad:
        raise ValueError(f"norm_num_groups={groups} must divide every channel count, not {bad}")
    if size is not None and size % (2 ** (len(channels) - 1)):
        raise ValueError(f"size {size} is not divisible by 2^{len(channels) - 1} for {len(channels)} U-Net levels")
