"""`toygpt sample`: generate text from a run, streamed to stdout as it is drawn.

Text goes to stdout, status to stderr. With several samples each one is preceded by a
line `--- sample N ---` (a format scripts can split on): sample 1 streams, the others
follow (they were drawn alongside it, and wait in a temporary file, so memory does not grow
with their length). `--json` prints a JSON list instead; `--interactive` reads prompts
from stdin, one per line, until EOF or an empty line.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from toygpt_cli.cli.common import err, paths, print_json, write_out
from toygpt_cli.cli.options import uses
from toygpt_cli.config import SampleConfig
from toygpt_cli.errors import ToygptError, UsageError

SEPARATOR = "--- sample {} ---"
MAX_PROMPT = 1_000_000  # bytes of a prompt (file, stdin or interactive line)
FIFO_WAIT = 10.0  # seconds a FIFO given as --prompt-file may take to send its text


@uses(
    "run", "prompt", "prompt_file", "interactive", SampleConfig, "json", "device", "dtype",
    "threads", "checkpoint", "runs_dir",
)  # fmt: skip
def sample(o) -> None:
    """Generate text from a trained run, streamed as it is drawn (text on stdout)."""
    cfg = SampleConfig(**{f: getattr(o, f) for f in SampleConfig.__dataclass_fields__})
    cfg.validate()
    if o.prompt and o.prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if o.interactive and (o.prompt or o.prompt_file is not None):
        raise UsageError("--interactive reads its prompts from stdin; drop --prompt/--prompt-file")
    if o.interactive and o.json:
        raise UsageError("--interactive streams text; --json is for one-shot sampling")
    prompt = o.prompt if o.prompt_file is None else read_prompt_file(o.prompt_file)

    from toygpt_cli.device import set_threads
    from toygpt_cli.runs.inference import load_for_inference
    from toygpt_cli.sample import new_seed

    set_threads(o.threads, generation=True)
    loaded = load_for_inference(o.run, paths(runs_dir=o.runs_dir).runs_dir, o.checkpoint,
                                o.device, o.dtype)  # fmt: skip
    what = "the prompt" if o.prompt_file is None else f"prompt file {o.prompt_file}"
    loaded.tokenizer.check(prompt, what, UsageError, "the run's")
    if cfg.seed < 0:
        cfg.seed = new_seed()
    err.print(
        f"sampling from {loaded.label} ({loaded.checkpoint.name}, step {loaded.step}) "
        f"on {loaded.device}, seed {cfg.seed}",
        highlight=False,
    )
    from toygpt_cli.sample import effective_top_k

    note = effective_top_k(cfg.top_k, loaded.tokenizer.vocab_size)
    if note:
        err.print(f"note: {note}", highlight=False)
    if o.interactive:
        _interactive(loaded, cfg)
    elif o.json:
        texts = _generate(loaded, prompt, cfg, write=None)
        print_json(_records(loaded, prompt, texts, cfg))
    else:
        _generate(loaded, prompt, cfg, write=write_out)


def read_prompt_file(path: str) -> str:
    """The file's text (`-`: stdin), at most MAX_PROMPT bytes, or a one-line error."""
    if path == "-":
        if sys.stdin is None:
            raise ToygptError("--prompt-file -: stdin is closed")
        raw = sys.stdin.buffer.read(MAX_PROMPT + 1)
        return _decode(raw, "stdin")
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
        if stat.S_ISDIR(mode):
            raise ToygptError(f"prompt file is a folder: {p}")
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ToygptError(f"prompt file not found: {p}") from None
    except OSError as exc:
        raise ToygptError(f"cannot read prompt file {p}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(mode):  # a pipe: wait (a while) for its writer's text
            if not select.select([fd], [], [], FIFO_WAIT)[0]:
                raise ToygptError(f"prompt file {p} sent nothing within {FIFO_WAIT:g} s")
            os.set_blocking(fd, True)
        raw = f.read(MAX_PROMPT + 1)
    return _decode(raw, str(p))


def _decode(raw: bytes, where: str) -> str:
    if len(raw) > MAX_PROMPT:
        raise ToygptError(f"the prompt from {where} is longer than {MAX_PROMPT:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"prompt file {where} is not UTF-8 text "
            f"(byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


class _Spool:
    """The characters of samples 2..N as they are drawn, one row of ids per step in a
    temporary file, read back sample by sample: memory stays flat however long they are."""

    def __init__(self, width: int):
        self.width, self.rows = width, 0
        with self._failing():
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    @staticmethod
    @contextlib.contextmanager
    def _failing():
        try:
            yield
        except OSError as exc:
            raise ToygptError(
                f"cannot keep samples 2..N in a temporary file in {tempfile.gettempdir()}: "
                f"{exc.strerror or exc} (set TMPDIR to a folder with room, or draw one sample)"
            ) from None

    def add(self, ids) -> None:
        import torch

        row = torch.tensor(ids, dtype=torch.int32)
        with self._failing():
            self.file.write(ctypes.string_at(row.data_ptr(), row.numel() * 4))
        self.rows += 1

    def samples(self, group: int = 64):
        """Each sample's ids, in order (read a group of samples at a time)."""
        import torch

        with self._failing():
            self.file.flush()
        if not self.rows:
            yield from ([] for _ in range(self.width))
            return
        # ACCESS_COPY: a writable view (torch warns about read-only buffers), never written back
        with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
            ids = torch.frombuffer(mapped, dtype=torch.int32).view(self.rows, self.width)
            for start in range(0, self.width, group):
                yield from ids[:, start : start + group].T.tolist()
            del ids

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


def _generate(loaded, prompt: str, cfg: SampleConfig, write, echo: bool = True) -> list[str]:
    """Draw one batch; stream sample 1 through `write` as it is drawn, then the others.
    Without `write` (--json), return the texts (each including the prompt)."""
    from toygpt_cli.sample import stream_samples

    n, chars = cfg.num_samples, loaded.tokenizer.chars
    draw = stream_samples(loaded.model, loaded.tokenizer, prompt=prompt, config=cfg,
                          dtype=loaded.dtype)  # fmt: skip
    if write is None:
        parts: list[list[str]] = [[] for _ in range(n)]
        for step in draw:
            for part, c in zip(parts, step, strict=True):
                part.append(c)
        return [prompt + "".join(part) for part in parts]
    if n > 1:
        write(SEPARATOR.format(1) + "\n")
    if echo:
        write(prompt)
    spool = _Spool(n - 1) if n > 1 else None
    try:
        for step in draw:
            write(step[0])
            if spool is not None:
                spool.add([loaded.tokenizer.stoi[c] for c in step[1:]])
        write("\n")
        if spool is not None:
            for i, ids in enumerate(spool.samples(), start=2):
                write(f"{SEPARATOR.format(i)}\n{prompt}")
                for start in range(0, len(ids), 4096):
                    write("".join(chars[j] for j in ids[start : start + 4096]))
                write("\n")
    finally:
        if spool is not None:
            spool.close()
    return []


def _records(loaded, prompt, texts, cfg: SampleConfig) -> list[dict[str, Any]]:
    return [
        {
            "sample": i + 1,
            "prompt": prompt,
            "text": text,
            "completion": text[len(prompt) :],
            "seed": cfg.seed,
            "num_samples": cfg.num_samples,
            "max_new_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "top_k": cfg.top_k or None,
            "top_p": cfg.top_p,
            "min_p": cfg.min_p,
            "dtype": loaded.dtype,
            "run": loaded.name,
            "checkpoint": loaded.checkpoint.name,
            "step": loaded.step,
        }
        for i, text in enumerate(texts)
    ]


def _wait_readable(stream) -> None:
    """Wait for input in short slices. A Ctrl-C may be delivered to one of torch's worker
    threads; a main thread blocked in read() would then never see it (measured: a hang)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (tests' in-memory stdin): read directly
    while not select.select([fd], [], [], 0.2)[0]:
        pass


def _interactive(loaded, cfg: SampleConfig) -> None:
    """Prompt, continuation, repeat. Turn k uses seed + k - 1, so a session replays exactly.

    On a terminal the prompt the user typed is already on screen, so a single sample
    prints only the continuation; from a pipe the prompt is echoed, so stdout reads as text.
    """
    import dataclasses

    from rich.markup import escape

    stdin = sys.stdin
    if stdin is None:
        raise UsageError("--interactive reads prompts from stdin, and stdin is closed")
    tty = stdin.isatty()
    if tty:
        err.print("type a prompt and press Enter; an empty line or Ctrl-D ends", style="dim")
    turn, seed = 0, cfg.seed
    while True:
        if tty:
            err.print("> ", end="")
        _wait_readable(stdin)
        reader = stdin.buffer if hasattr(stdin, "buffer") else stdin
        line = reader.readline(MAX_PROMPT + 1)
        if len(line) > MAX_PROMPT:
            raise ToygptError(f"a prompt line is longer than {MAX_PROMPT:,} characters")
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                err.print("[bold red]error:[/] that line is not UTF-8 text; try again")
                continue
        text = line.rstrip("\r\n")
        if not text:
            if tty and not line:
                err.print()  # Ctrl-D leaves the cursor after "> "
            return
        try:
            loaded.tokenizer.check(text, "the prompt", UsageError, "the run's")
        except UsageError as exc:
            again = "try again" if tty else "skipped"
            err.print(f"[bold red]error:[/] {escape(str(exc))}; {again}", highlight=False)
            continue
        echo = not tty or cfg.num_samples > 1
        turn_cfg = dataclasses.replace(cfg, seed=seed + turn)
        _generate(loaded, text, turn_cfg, write=write_out, echo=echo)
        turn += 1
