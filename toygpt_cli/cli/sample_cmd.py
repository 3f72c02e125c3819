"""`toygpt sample`: generate text from a run, streamed to stdout as it is drawn.

Text goes to stdout, status to stderr. With several samples each one is preceded by a
line `--- sample N ---` (a format scripts can split on); `--json` prints a JSON list
instead; `--interactive` reads prompts from stdin, one per line, until EOF or an empty
line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from toygpt_cli.cli.common import (
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    RunRef,
    RunsDir,
    ThreadsOpt,
    err,
    handle_errors,
    paths,
)
from toygpt_cli.errors import ToygptError, UsageError

SEPARATOR = "--- sample {} ---"


@handle_errors
def sample(
    run: RunRef = "latest",
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", min=1, help="Characters to generate.")
    ] = 500,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "",
    prompt_file: Annotated[
        Path | None,
        typer.Option("--prompt-file", help="Continue the text of this UTF-8 file (- for stdin)."),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="Read a prompt per line from stdin and continue each; EOF or an empty line ends.",
        ),
    ] = False,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature", "-t", help="Above 1 is wilder, below 1 is safer, 0 is greedy."
        ),
    ] = 1.0,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Sample only among the k likeliest characters.")
    ] = None,
    num_samples: Annotated[
        int, typer.Option("--num-samples", min=1, help="Independent samples, made in one batch.")
    ] = 1,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Same seed, same text (default: a fresh one).")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of samples instead of streaming.")
    ] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    checkpoint: CheckpointOpt = "auto",
    threads: ThreadsOpt = 0,
    runs_dir: RunsDir = None,
) -> None:
    """Generate text from a trained run, streamed as it is drawn (text on stdout)."""
    from toygpt_cli.sample import check_sampling, new_seed

    check_sampling(temperature, top_k)
    if sys.stdout is None:
        raise ToygptError("stdout is closed: there is nowhere to write the text")
    if prompt and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if interactive and (prompt or prompt_file is not None):
        raise UsageError("--interactive reads its prompts from stdin; drop --prompt/--prompt-file")
    if interactive and json_:
        raise UsageError("--interactive streams text; --json is for one-shot sampling")
    if prompt_file is not None:
        prompt = read_prompt_file(prompt_file)

    from toygpt_cli.device import set_threads
    from toygpt_cli.runs.inference import load_for_inference

    set_threads(threads)

    loaded = load_for_inference(run, paths(runs_dir=runs_dir).runs_dir, checkpoint, device, dtype)
    what = "the prompt" if prompt_file is None else f"prompt file {prompt_file}"
    check_vocabulary(loaded.tokenizer, prompt, what)
    seed = new_seed() if seed is None else seed
    err.print(
        f"sampling from {loaded.name} ({loaded.checkpoint.name}, step {loaded.step}) "
        f"on {loaded.device}, seed {seed}",
        highlight=False,
    )
    settings = {
        "max_new_tokens": max_new_tokens,
        "num_samples": num_samples,
        "temperature": temperature,
        "top_k": top_k,
        "dtype": loaded.dtype,
    }
    try:
        if interactive:
            _interactive(loaded, settings, seed)
        elif json_:
            texts = _generate(loaded, prompt, settings, seed, write=None)
            print(json.dumps(_records(loaded, prompt, texts, settings, seed), indent=2))
        else:
            _generate(loaded, prompt, settings, seed, write=_write)
    except KeyboardInterrupt:
        err.print()  # end the half-written line; exit like a shell does on Ctrl-C
        raise typer.Exit(130) from None


def read_prompt_file(path: Path) -> str:
    """The file's text, or a one-line error saying why it cannot be used."""
    if str(path) == "-":
        if sys.stdin is None:
            raise ToygptError("--prompt-file -: stdin is closed")
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ToygptError(f"prompt file not found: {path}") from None
        except IsADirectoryError:
            raise ToygptError(f"prompt file is a folder: {path}") from None
        except OSError as exc:
            raise ToygptError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"prompt file {path} is not UTF-8 text "
            f"(byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def check_vocabulary(tokenizer, text: str, what: str) -> None:
    missing = tokenizer.unknown(text)
    if missing:
        raise UsageError(
            f"{what} has characters outside the run's vocabulary: "
            + " ".join(repr(c) for c in missing)
        )


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _generate(loaded, prompt: str, settings: dict[str, Any], seed: int, write, echo=True):
    """Generate one batch; stream sample 1 through `write` as it is drawn, then the others.

    The samples are drawn together, so the others are complete when the first one is.
    `echo=False` leaves out sample 1's prompt (a terminal already shows what was typed).
    Returns the texts, each including the prompt, exactly as `sample_text` would.
    """
    from toygpt_cli.sample import stream_samples

    n = settings["num_samples"]
    parts: list[list[str]] = [[] for _ in range(n)]
    if write:
        if n > 1:
            write(SEPARATOR.format(1) + "\n")
        if echo:
            write(prompt)
    for chars in stream_samples(
        loaded.model,
        loaded.tokenizer,
        prompt=prompt,
        max_new_tokens=settings["max_new_tokens"],
        num_samples=n,
        temperature=settings["temperature"],
        top_k=settings["top_k"],
        seed=seed,
        dtype=settings["dtype"],
    ):
        if write:
            write(chars[0])
        for part, c in zip(parts, chars, strict=True):
            part.append(c)
    texts = [prompt + "".join(part) for part in parts]
    if write:
        write("\n")
        for i in range(1, n):
            write(f"{SEPARATOR.format(i + 1)}\n{texts[i]}\n")
    return texts


def _records(loaded, prompt, texts, settings, seed) -> list[dict[str, Any]]:
    return [
        {
            "sample": i + 1,
            "prompt": prompt,
            "text": text,
            "completion": text[len(prompt) :],
            "seed": seed,
            "num_samples": settings["num_samples"],
            "max_new_tokens": settings["max_new_tokens"],
            "temperature": settings["temperature"],
            "top_k": settings["top_k"],
            "dtype": settings["dtype"],
            "run": loaded.name,
            "checkpoint": loaded.checkpoint.name,
            "step": loaded.step,
        }
        for i, text in enumerate(texts)
    ]


def _wait_readable(stream) -> None:
    """Wait for input in short slices. A Ctrl-C may be delivered to one of torch's worker
    threads; a main thread blocked in read() would then never see it (measured: a hang)."""
    import select

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (tests' in-memory stdin): read directly
    while not select.select([fd], [], [], 0.2)[0]:
        pass


def _interactive(loaded, settings: dict[str, Any], seed: int) -> None:
    """Prompt, continuation, repeat. Turn k uses seed + k - 1, so a session replays exactly.

    On a terminal the prompt the user typed is already on screen, so a single sample
    prints only the continuation; from a pipe the prompt is echoed, so stdout reads as text.
    """
    from rich.markup import escape

    stdin = sys.stdin
    if stdin is None:
        raise UsageError("--interactive reads prompts from stdin, and stdin is closed")
    tty = stdin.isatty()
    if tty:
        err.print("type a prompt and press Enter; an empty line or Ctrl-D ends", style="dim")
    turn = 0
    while True:
        if tty:
            err.print("> ", end="")
        _wait_readable(stdin)
        line = stdin.buffer.readline() if hasattr(stdin, "buffer") else stdin.readline()
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
            check_vocabulary(loaded.tokenizer, text, "the prompt")
        except UsageError as exc:
            again = "try again" if tty else "skipped"
            err.print(f"[bold red]error:[/] {escape(str(exc))}; {again}", highlight=False)
            continue
        echo = not tty or settings["num_samples"] > 1
        _generate(loaded, text, settings, seed + turn, write=_write, echo=echo)
        turn += 1
