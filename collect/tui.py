"""The terminal interface of ``kws record``: one screen, drawn with ``rich``, keys read in cbreak mode.

Works in any terminal that ``rich`` can draw in (an SSH session on a Raspberry
Pi, a laptop terminal, tmux): it redraws a panel in place with ``rich.live``,
and it reads single key presses with the standard ``termios``/``select`` (no
Enter needed, no escape sequences written by hand). The keys are always shown
at the bottom of the screen:

    space  record (again)         p  play the last take
    r      redo: drop the previous take and record it again
    b      mark the previous take bad (drop it, skip its prompt)
    s      skip this prompt       q  quit (resume later with --resume)

While recording, any key stops the take early (it is then checked as usual).
The level meter is live whenever the screen is up, so the organiser sees the
microphone working before the first take.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from contextlib import contextmanager

from rich.align import Align
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from collect.quality import FLOOR_DB, level_dbfs

METER_FLOOR_DB = -60.0
KEYS = [("space", "record"), ("p", "play"), ("r", "redo previous"), ("b", "previous bad"), ("s", "skip"), ("q", "quit")]
ACTIONS = {" ": "record", "\n": "record", "\r": "record", "p": "play", "r": "redo", "b": "bad", "s": "skip", "q": "quit"}


@contextmanager
def cbreak(stream=None):
    """Single key presses without Enter and without echo; the terminal is restored on any exit."""
    stream = stream or sys.stdin
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(timeout: float = 0.0, stream=None) -> str | None:
    """One key press if one arrives within ``timeout`` seconds, else None."""
    stream = stream or sys.stdin
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return None
    ch = os.read(stream.fileno(), 1).decode("utf-8", "replace")
    return ch.lower() if ch else None


class TerminalFrontend:
    """The ``collect.record.Frontend`` for a person at the keyboard; see the module docstring for keys."""

    def __init__(self, mic, max_seconds: float, console: Console | None = None):
        self.mic = mic
        self.max_seconds = max_seconds
        self.console = console or Console()
        self.live: Live | None = None
        self.session = None
        self.prompt = None
        self.status = Text("")
        self.level_db = FLOOR_DB
        self.elapsed = 0.0
        self.log: list[Text] = []
        self._stop = False

    # drawing

    def _meter(self) -> Table:
        frac = max(0.0, (self.level_db - METER_FLOOR_DB) / -METER_FLOOR_DB)
        style = "red" if self.level_db > -1 else ("green" if self.level_db > -30 else "yellow")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=7)
        grid.add_column(ratio=1)
        grid.add_column(width=9, justify="right")
        level = "  -inf" if self.level_db <= FLOOR_DB else f"{self.level_db:5.0f}"
        grid.add_row("level", ProgressBar(total=1.0, completed=frac, complete_style=style, finished_style="red"), f"{level} dB")
        grid.add_row("time", ProgressBar(total=self.max_seconds, completed=min(self.elapsed, self.max_seconds)),
                     f"{self.elapsed:4.1f}/{self.max_seconds:.0f} s")
        return grid

    def render(self) -> Panel:
        s, p = self.session, self.prompt
        total = len(s.prompts) if s else 0
        done = total - len(s.remaining()) if s else 0
        head = Table.grid(expand=True)
        head.add_column()
        head.add_column(justify="right")
        if s:
            head.add_row(f"speaker [bold]{s.speaker.speaker}[/] · accent {s.speaker.accent}", f"prompt {min(done + 1, total)}/{total} · kept {len(s.rows())}")
        body = [head, ProgressBar(total=max(total, 1), completed=done), Text("")]
        if p is not None:
            kind = "the wake word" if p.kind == "keyword" else ("a similar word" if p.kind == "confusable" else "a sentence")
            body += [Align.center(Text(f"Please say {kind}:", style="dim")),
                     Align.center(Text(p.text, style="bold cyan")), Text("")]
        body += [Align.center(self.status), Text(""), self._meter(), Text("")]
        body += self.log[-3:]
        keys = Text("  ").join(Text.assemble((k, "bold reverse"), f" {a}") for k, a in KEYS)
        return Panel(Group(*body), title=f"kws record · {s.id if s else ''}", subtitle=keys, border_style="blue")

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render(), refresh=True)

    @contextmanager
    def running(self):
        """Keys in cbreak mode and the live screen, for the length of the take loop."""
        with cbreak(), Live(self.render(), console=self.console, auto_refresh=False, transient=False) as live:
            self.live = live
            try:
                yield self
            finally:
                self.live = None

    # the Frontend protocol

    def choose(self, session, prompt, failures, last) -> str:
        self.session, self.prompt = session, prompt
        if not failures and not self.status.plain.startswith(("kept", "previous", "skipped")):
            self.status = Text("press space to record", style="bold")
        self.elapsed = 0.0
        while True:
            block = self.mic.read()
            self.level_db = level_dbfs(block)
            self._refresh()
            key = read_key(0)
            if key in ACTIONS:
                action = ACTIONS[key]
                if action in ("play", "redo", "bad") and last is None:
                    self.message("no previous take yet")
                    continue
                if action == "play":
                    self.status = Text("playing the last take...", style="magenta")
                    self._refresh()
                elif action == "record":
                    self._stop = False
                return action

    def countdown(self, seconds_left: float, level_db: float) -> None:
        self.level_db = level_db
        self.status = Text(f"get ready... {int(seconds_left) + 1}", style="bold yellow")
        self._refresh()

    def on_block(self, level_db: float, elapsed_s: float, heard_speech: bool) -> None:
        self.level_db, self.elapsed = level_db, elapsed_s
        self.status = Text("● recording: speak now" + (" (hearing you)" if heard_speech else "") + " · any key stops",
                           style="bold red")
        self._refresh()
        if read_key(0) is not None:
            self._stop = True

    def should_stop(self) -> bool:
        return self._stop

    def result(self, prompt, report, row, notes) -> None:
        if row is not None:
            self.status = Text(f"kept ✓ {row.duration_s:.2f} s · space: next prompt", style="bold green")
            self.log.append(Text(f"kept {row.path} ({row.duration_s:.2f} s)", style="green"))
        else:
            self.status = Text(f"not kept: {report.reason}\npress space to try again, p to listen, s to skip", style="bold red")
            self.log.append(Text(f"not kept ({prompt.text}): {report.reason}", style="red"))
        for note in notes:
            self.log.append(Text(f"note: {note}", style="dim"))
        self._refresh()

    def message(self, text: str) -> None:
        self.status = Text(text, style="yellow")
        self.log.append(Text(text, style="yellow"))
        self._refresh()


def wait_for_enter_or_quit(console: Console, text: str) -> bool:
    """A plain confirmation line before the screen starts: Enter continues, q quits."""
    console.print(text)
    with cbreak():
        while True:
            key = read_key(0.5)
            if key in ("\n", "\r", " "):
                return True
            if key == "q":
                return False
            time.sleep(0.01)


def ask_speaker(console: Console, suggested_id: str, accents: list[str], speaker: str | None, accent: str | None,
                gender: str | None, age_band: str | None, age_bands: tuple[str, ...]) -> tuple[str, str, str | None, str | None]:
    """Ask for what the options did not give: a pseudonym (suggested), accent (existing tags offered), gender, age band.

    Never asks for a name: the id is made up, and the prompt says so.
    """
    from rich.prompt import Prompt

    if speaker is None:
        console.print("[dim]Speaker id: a made-up id, never the volunteer's name.[/]")
        speaker = Prompt.ask("speaker id", default=suggested_id, console=console)
    if accent is None:
        if accents:
            console.print("accents already in this dataset: " + ", ".join(f"[cyan]{a}[/]" for a in accents[:20]))
        while not accent:
            accent = Prompt.ask("accent (the volunteer's own words, or one of the tags above)", console=console).strip()
    if gender is None:
        gender = Prompt.ask("gender (optional, Enter to skip)", default="", show_default=False, console=console).strip() or None
    if age_band is None:
        answer = Prompt.ask(f"age band (optional: {', '.join(age_bands)}; Enter to skip)", default="", show_default=False,
                            console=console).strip()
        while answer and answer not in age_bands:
            answer = Prompt.ask(f"age band: one of {', '.join(age_bands)}, or Enter to skip", default="", show_default=False,
                                console=console).strip()
        age_band = answer or None
    return speaker, accent, gender, age_band


def ask_consent(console: Console, text: str, speaker: str) -> bool:
    """Show the consent text and ask; only an explicit yes counts."""
    from rich.prompt import Confirm

    console.print(Panel(text, title=f"consent · speaker {speaker}", border_style="yellow"))
    return Confirm.ask("Does the volunteer agree?", default=False, console=console)
