"""`nobat prompts build`: speak every prompt with espeak-ng, convert with sox for Asterisk.

A file a clinic replaced with a recording is never overwritten: the build remembers the hash
of what it wrote, and a file whose hash differs belongs to the clinic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ivr.prompts import LANGUAGES, PromptLibrary

LEDGER = ".built.json"
VOICES = {"fa": "fa", "en": "en"}


@dataclass
class BuildReport:
    """What a build did, for the person who ran it."""

    built: list[str] = field(default_factory=list)
    unchanged: int = 0
    kept_recordings: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err.decode(errors='replace').strip()}")


async def speak(text: str, lang: str, target: Path) -> None:
    """Text to an 8 kHz, 16-bit, mono WAV, the format Asterisk plays without transcoding."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        await _run("espeak-ng", "-v", VOICES[lang], "-s", "150", "-w", str(raw), text)
        target.parent.mkdir(parents=True, exist_ok=True)
        await _run("sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(target))


class PromptBuild:
    """Decides what to speak (sync, file checks), speaks it (async), records it (sync)."""

    def __init__(self, library: PromptLibrary, root: Path) -> None:
        self.library = library
        self.root = root
        self.ledger_path = root / LEDGER
        self.ledger: dict[str, dict[str, str]] = (
            json.loads(self.ledger_path.read_text()) if self.ledger_path.exists() else {})
        self.report = BuildReport()

    def plan(self) -> list[tuple[str, str, str]]:
        """(language, name, text) of every prompt missing or whose words changed."""
        todo = []
        for lang in LANGUAGES:
            for key, text in sorted(self.library.texts[lang].items()):
                if text and self._needs(lang, key, text):
                    todo.append((lang, key, text))
        return todo

    def _needs(self, lang: str, key: str, text: str) -> bool:
        name = f"{lang}/{key}"
        target = self.root / lang / f"{key}.wav"
        entry = self.ledger.get(name)
        if not target.exists():
            return True
        if entry is None or _sha(target.read_bytes()) != entry["wav"]:
            self.report.kept_recordings.append(name)
            return False
        if entry["text"] == _sha(text.encode()):
            self.report.unchanged += 1
            return False
        return True

    async def speak_all(self, todo: list[tuple[str, str, str]], parallel: int = 4) -> None:
        """Run espeak-ng and sox, a few at a time."""
        gate = asyncio.Semaphore(parallel)

        async def one(lang: str, key: str, text: str) -> None:
            async with gate:
                try:
                    await speak(text, lang, self.root / lang / f"{key}.wav")
                except (RuntimeError, OSError) as exc:
                    self.report.failed.append(f"{lang}/{key}: {exc}")
                    return
            self.report.built.append(f"{lang}/{key}")

        await asyncio.gather(*(one(*item) for item in todo))

    def record(self, todo: list[tuple[str, str, str]]) -> BuildReport:
        """Remember the hash of each file written, so a later recording is recognised."""
        built = set(self.report.built)
        for lang, key, text in todo:
            if f"{lang}/{key}" in built:
                wav = (self.root / lang / f"{key}.wav").read_bytes()
                self.ledger[f"{lang}/{key}"] = {"text": _sha(text.encode()), "wav": _sha(wav)}
        self.root.mkdir(parents=True, exist_ok=True)
        self.ledger_path.write_text(json.dumps(self.ledger, indent=1, sort_keys=True,
                                               ensure_ascii=False))
        return self.report
