"""Command-line flags generated from parameter dataclasses: each default is written once.

Every field of a dataclass becomes `--field-name`; fields that are dataclasses themselves
(TrainParams.als) contribute their own fields, flattened. A field's metadata may name its
flag (`flag`, when two nested fields share a name), give `help` and `choices`, or keep it
off the command line (`cli: False`). With `env_prefix`, an environment variable
(NICHEFEED_FIELD_NAME) sets the default and the flag still wins: the service's Config.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

_SCALARS = (int, float, str, bool, Path)


def param(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None, cli: bool = True):
    """A dataclass field with what its command-line flag needs."""
    meta = {"help": help, "flag": flag, "choices": choices, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class _Leaf:
    path: tuple[str, ...]  # field names from the outer dataclass down
    flag: str
    type: type
    optional: bool  # `X | None`: an empty value means None
    default: Any
    help: str
    choices: tuple | None


def _scalar(hint) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) of a field's annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def leaves(cls, defaults=None, path: tuple[str, ...] = ()) -> list[_Leaf]:
    defaults = cls() if defaults is None else defaults
    hints = typing.get_type_hints(cls)
    out: list[_Leaf] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        value = getattr(defaults, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += leaves(hint, value, path + (f.name,))
            continue
        typ, optional = _scalar(hint)
        if typ not in _SCALARS:
            continue  # tuples and the like stay off the command line
        flag = f.metadata.get("flag") or f.name.replace("_", "-")
        out.append(
            _Leaf(path + (f.name,), flag, typ, optional, value, f.metadata.get("help", ""), f.metadata.get("choices"))
        )
    names = [leaf.flag for leaf in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TypeError(f"{cls.__name__}: flags {sorted(dup)} come from several fields; name them in metadata")
    return out


def _parse(typ: type, optional: bool):
    def parse(text: str):
        if optional and text in ("", "none", "None"):
            return None
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return typ(text)

    parse.__name__ = typ.__name__  # argparse names the type in its error messages
    return parse


def add_flags(
    parser: argparse.ArgumentParser, cls, *, env_prefix: str | None = None, environ: dict[str, str] | None = None
) -> None:
    """Add a flag per field of `cls` to parser (defaults from the dataclass or the env)."""
    for leaf in leaves(cls):
        default, where = leaf.default, f"default {leaf.default}"
        if env_prefix is not None:
            env = env_prefix + "_".join(leaf.path).upper()
            value = (environ or {}).get(env)
            # An empty variable means "unset", except for strings, where empty is a value.
            if value is not None and (value != "" or leaf.type is str):
                default = _parse(leaf.type, leaf.optional)(value)
            where = f"env {env}, default {leaf.default}"
        text = f"{leaf.help} ({where})" if leaf.help else f"({where})"
        parser.add_argument(
            f"--{leaf.flag}",
            dest="__".join(leaf.path),
            type=_parse(leaf.type, leaf.optional),
            default=default,
            choices=leaf.choices,
            help=text,
            metavar=leaf.type.__name__.upper(),
        )


def from_flags(cls, args: argparse.Namespace, path: tuple[str, ...] = ()):
    """Build `cls` (nested dataclasses included) from parsed flags; fields without a flag
    keep their defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = from_flags(hints[f.name], args, path + (f.name,))
            continue
        dest = "__".join(path + (f.name,))
        if hasattr(args, dest):
            kwargs[f.name] = getattr(args, dest)
    return cls(**kwargs)
