"""Reading a run's JSON files and checking they have the shape toygpt writes.

Whatever is in a run folder (a truncated config.json, a metrics line `5`, a loss of
"abc", a status of `[]`) comes back either as data of the expected types or as one
DamagedRun error with a one-line reason; never as an exception from deep inside a caller.
"""

from __future__ import annotations

import collections
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from toygpt_cli.config import ModelConfig, TrainConfig, check
from toygpt_cli.errors import ToygptError


class DamagedRun(ToygptError):
    """A run folder whose files cannot be read as toygpt wrote them."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"run {name} is damaged: {reason}")
        self.reason = reason


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TESTS = {
    "int": _is_int,
    "num": _is_num,
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
}

# The fields each file may hold, and their kinds (a missing field or null is always fine).
METRIC_FIELDS = {"step": "int", "train_loss": "num", "val_loss": "num", "lr": "num"}
METRIC_FIELDS.update(tokens_per_sec="num", elapsed="num", eval_windows="int")
SAMPLE_FIELDS = {"step": "int", "text": "str"}
TRACE_FIELDS = {"step": "int", "loss": "num", "lr": "num", "elapsed": "num"}
STATUS_FIELDS = {"status": "str", "host": "str", "started": "str", "updated": "str"}
STATUS_FIELDS.update(step="int", planned_steps="int", wall_seconds="num")
STATUS_FIELDS.update(best_val="num", last_val="num", last_train="num")
CONFIG_FIELDS = {"label": "str", "created": "str", "vocab": "str", "n_params": "int"}
CONFIG_SECTIONS = {  # sections that must be objects when present, and what is read in them
    "model": {},
    "train": {"iters": "int"},
    "resolved": {"device": "str", "dtype": "str"},
    "data": {"path": "str", "sha256": "str", "chars": "int"},
}


def short(v: Any) -> str:
    """A value as JSON, cut to fit in a one-line message."""
    try:
        text = json.dumps(v)
    except (ValueError, TypeError):
        text = "a huge number"
    return text if len(text) <= 40 else text[:37] + "..."


def check_fields(record: dict, kinds: dict[str, str]) -> str | None:
    """The first field whose value is not of its kind, as a message; None when all are."""
    for key, kind in kinds.items():
        value = record.get(key)
        if value is not None and not _TESTS[kind](value):
            return f"{key} is {short(value)}"
    return None


def config_problem(cfg: Any) -> str | None:
    """What is wrong with a config.json's content, or None."""
    if not isinstance(cfg, dict):
        return f"not a JSON object: {short(cfg)}"
    problem = check_fields(cfg, CONFIG_FIELDS)
    for section, kinds in CONFIG_SECTIONS.items():
        if problem or section not in cfg:
            continue
        if not isinstance(cfg[section], dict):
            problem = f"{section} is {short(cfg[section])}"
        elif check_fields(cfg[section], kinds):
            problem = f"{section}.{check_fields(cfg[section], kinds)}"
    if problem is None and "data" in cfg and not isinstance(cfg["data"].get("path"), str):
        problem = f"data.path is {short(cfg['data'].get('path'))}"
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        if problem is None and isinstance(cfg.get(section), dict):
            problem = _declared_problem(cfg[section], cls, section)
    return problem


def _declared_problem(values: dict, cls: type, section: str) -> str | None:
    """The first option of a run's configuration whose value its declaration refuses."""
    for f in fields(cls):
        if values.get(f.name) is not None:  # missing or null: not recorded, always fine
            try:
                check(f, values[f.name])
            except ToygptError:
                return f"{section}.{f.name} is {short(values[f.name])}"
    return None


def load_json(path: Path, run_name: str) -> Any:
    """A JSON file of run `run_name`; DamagedRun when it cannot be read or parsed."""
    name = path.name
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader
            raise DamagedRun(run_name, f"{name} is not a regular file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DamagedRun(run_name, f"{name} is missing") from None
    except OSError as exc:
        raise DamagedRun(run_name, f"cannot read {name}: {exc.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedRun(run_name, f"{name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        why = f"{exc.msg}: line {exc.lineno} column {exc.colno}"
        raise DamagedRun(run_name, f"{name} is not valid JSON ({why})") from None
    except (ValueError, RecursionError) as exc:  # too deep, an integer of 5,000 digits
        raise DamagedRun(run_name, f"{name} is not valid JSON ({exc})") from None


def read_records(path: Path, run_name: str, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """All of a JSON-lines file's records (see `iter_records`)."""
    return list(iter_records(path, run_name, kinds))


def iter_records(path: Path, run_name: str, kinds: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A JSON-lines file's records, one at a time (memory does not grow with the file), each
    with an integer `step`. A line torn by a crash mid-write is skipped (the last one, or one
    a later append ran into); a whole record of the wrong shape is a DamagedRun naming its
    line."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DamagedRun(run_name, f"{path.name} is not a regular file")
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DamagedRun(run_name, f"cannot read {path.name}: {exc.strerror}") from None
    with f:
        for lineno, line in enumerate(_lines(f), 1):
            if line is None:  # longer than any record toygpt writes: damage, passed over
                continue
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(record, dict):
                problem: str | None = f"not a record: {short(record)}"
            elif not _is_int(record.get("step")):
                problem = f"step is {short(record.get('step'))}"
            else:
                problem = check_fields(record, kinds)
            if problem:
                raise DamagedRun(run_name, f"{path.name} line {lineno}: {problem}")
            yield record


MAX_LINE = 4 << 20  # a record's line: a 100,000-character sample is under 1 MB of JSON


def _lines(f) -> Iterator[bytes | None]:
    """The file's lines; None for one longer than MAX_LINE (read past, never held)."""
    while line := f.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE or line.endswith(b"\n"):
            yield line if len(line) <= MAX_LINE else None
            continue
        while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
            pass
        yield None if rest else line[:0]  # a torn, endless last line ends the file


def bounded_records(path: Path, run_name: str, kinds: dict[str, str], head_n: int, tail_n: int,
                    points: int) -> tuple[list, list, list, int]:  # fmt: skip
    """(first head_n records, last tail_n, at most about 2 x `points` evenly spread records
    for a chart, how many there are), in one pass with bounded memory, however long the
    file: what `runs show` prints of a run with any number of evals."""
    head, tail, thinned, stride, count = [], collections.deque(maxlen=tail_n), [], 1, 0
    for rec in iter_records(path, run_name, kinds):
        if count < head_n:
            head.append(rec)
        tail.append(rec)
        if count % stride == 0:
            thinned.append(rec)
            if len(thinned) > 2 * points:  # keep every other, and take half as many
                thinned, stride = thinned[::2], stride * 2
        count += 1
        last = rec
    if count and (not thinned or thinned[-1] is not last):
        thinned.append(last)
    return head, list(tail), thinned, count
