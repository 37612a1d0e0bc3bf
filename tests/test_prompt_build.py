"""`nobat prompts build`: real espeak-ng and sox, 8 kHz mono WAV, recordings kept."""

from __future__ import annotations

import wave
from pathlib import Path

from ivr.prompt_build import PromptBuild
from ivr.prompts import PromptLibrary


async def build(library: PromptLibrary, root: Path) -> PromptBuild:
    run = PromptBuild(library, root)
    todo = run.plan()
    await run.speak_all(todo)
    run.record(todo)
    return run


async def test_prompts_are_spoken_at_8khz_and_rebuilt_only_when_their_words_change(
        tmp_path: Path) -> None:
    texts = {"fa": {"welcome": "به درمانگاه نوبت خوش آمدید.", "num/21": "بیست و یک"},
             "en": {"welcome": "Welcome to Nobat Clinic."}}
    first = await build(PromptLibrary(texts, str(tmp_path)), tmp_path)
    assert sorted(first.report.built) == ["en/welcome", "fa/num/21", "fa/welcome"]
    with wave.open(str(tmp_path / "fa" / "welcome.wav")) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
        assert audio.getnframes() > 8000
    again = await build(PromptLibrary(texts, str(tmp_path)), tmp_path)
    assert (again.report.built, again.report.unchanged) == ([], 3)

    recording = tmp_path / "fa" / "welcome.wav"
    recording.write_bytes(recording.read_bytes()[:-800])
    texts["fa"]["welcome"] = "سلام، به درمانگاه خوش آمدید."
    texts["en"]["welcome"] = "Hello, and welcome."
    changed = await build(PromptLibrary(texts, str(tmp_path)), tmp_path)
    assert changed.report.built == ["en/welcome"]
    assert changed.report.kept_recordings == ["fa/welcome"]
    assert changed.report.failed == []
