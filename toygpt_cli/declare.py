"""How an option is declared once and checked: `Opt` (help, flag, bounds, choices, resume
policy) on a dataclass field, made with `option(...)`; `check` and `validate` turn any value
(from a flag, a TOML file, a run's config.json, Python) into the field's type, or one line
of error. The configurations (config.py) and the command line's own options
(cli/options.py) all declare their fields this way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from toygpt_cli.errors import OptionError

# Resume policies: FIXED fields define the run (refused on resume when they differ);
# CHANGE fields may change on resume and do; STEPS is `iters`, which a resume sets from
# the number of further steps it is asked for.
FIXED, CHANGE, STEPS = "fixed", "change", "steps"
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Opt:
    """How one option appears to users and how it is checked: the one declaration that the
    command line, the generated reference, config files and the resume check all read."""

    help: str
    panel: str | None = None  # the group it is listed under in --help
    resume: str = CHANGE
    flag: str | None = None  # default: --field-name
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    min: float | None = None  # inclusive bound ...
    above: float | None = None  # ... or exclusive bound from below
    max: float | None = None  # inclusive bound ...
    below: float | None = None  # ... or exclusive bound from above
    parse: Callable[[Any], Any] | None = None  # turns a string (flag, TOML) into the value
    metavar: str | None = None
    envvar: str | None = None
    cli: bool = True  # False: derived, not an option
    negatable: bool = True  # a switch has a --no- form (False: a plain flag, e.g. --json)
    argument: bool = False  # a positional argument rather than an option
    many: bool = False  # takes several values (a positional argument: RUN RUN ...)
    required: bool = False  # a positional argument the command cannot do without
    complete: Callable[[str], list[str]] | None = None  # shell completion of its values


def option(default: Any, help: str, panel: str | None = None, resume: str = CHANGE, **kw: Any):
    """A dataclass field declared as an option."""
    return field(default=default, metadata={"opt": Opt(help, panel, resume, **kw)})


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def field_type(f: dataclasses.Field) -> type:
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return _TYPES[name.split(" | ")[0]]


def validate(obj: Any) -> None:
    """Check (and coerce) every declared field of a dataclass: one line per problem."""
    for f in fields(obj):
        setattr(obj, f.name, check(f, getattr(obj, f.name)))


def _n(value) -> str:
    """A bound or value as people write it: integers whole (1000000), floats short (1e-06)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def check(f: dataclasses.Field, value: Any) -> Any:
    """One field's value, checked against its declaration: type (ints widen to floats),
    finiteness, bounds and choices. Returns the value as the field's type."""
    opt: Opt = f.metadata["opt"]
    want = field_type(f)
    if opt.parse is not None and isinstance(value, str):
        value = opt.parse(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is None and f.default is None:
        return None
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        raise OptionError(f"{f.name} must be {kind[want]}, got {value!r}", f.name)
    if want is float and not math.isfinite(value):
        raise OptionError(f"{f.name} must be a finite number, got {value}", f.name)
    if want is int and abs(value) > INT64_MAX:
        raise OptionError(f"{f.name} is out of range: {value}", f.name)
    if opt.min is not None and value < opt.min:
        rel = "greater than 0" if opt.min == 1 and want is int else f"at least {_n(opt.min)}"
        if opt.min == 0:
            rel = "0 or more"
        raise OptionError(f"{f.name} must be {rel}, got {_n(value)}", f.name)
    if opt.above is not None and not value > opt.above:
        raise OptionError(f"{f.name} must be greater than {_n(opt.above)}, got {_n(value)}",
                          f.name)  # fmt: skip
    if opt.max is not None and value > opt.max:
        raise OptionError(f"{f.name} must be at most {_n(opt.max)}, got {_n(value)}", f.name)
    if opt.below is not None and not value < opt.below:
        lo = f"[{_n(opt.min)}, {_n(opt.below)})" if opt.min is not None else None
        lo = lo or f"({_n(opt.above)}, {_n(opt.below)})"
        raise OptionError(f"{f.name} must be in {lo}, got {_n(value)}", f.name)
    if opt.choices is not None and value not in opt.choices:
        raise OptionError(
            f"{f.name} must be one of {', '.join(opt.choices)}; got {value!r}", f.name
        )
    return value


def format_default(value: Any) -> str:
    """A default as --help and the README show it: on/off for switches."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)
