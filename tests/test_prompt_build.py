"""`nobat prompts build`: real espeak-ng and sox, 8 kHz mono WAV, recordings kept."""

from __future__ import annotations

import wave
from pathlib import Path

from ivr.prompt_build import PromptBuild
from ivr.prompts import ClinicWords, PromptLibrary


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


async def test_each_practice_of_several_gets_its_own_name_and_doctors_built_and_played(
        tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[fa]\n"welcome" = "خوش آمدید."\n[en]\n"welcome" = "Welcome."\n')
    words = [ClinicWords({"fa": f"مطب {n}", "en": f"Practice {n}"}, {"fa": "", "en": ""},
                         {"dr-a": {"fa": f"دکتر {n}", "en": f"Dr. {n}"}}, folder=key)
             for n, key in ((1, "tehran"), (2, "shiraz"))]
    library = PromptLibrary.load(manifest, str(tmp_path), words)
    shiraz = library.practice("shiraz")
    assert shiraz.file("en", "doctor/dr-a") == f"{tmp_path}/en/doctor/shiraz/dr-a"
    assert shiraz.text("en", "clinic/name") == "Practice 2"
    assert library.practice("tehran").text("en", "doctor/dr-a") == "Dr. 1"
    assert shiraz.file("en", "welcome") == f"{tmp_path}/en/welcome"
    run = PromptBuild(library, tmp_path)
    todo = [item for item in run.plan() if item[0] == "en" and "/" in item[1]]
    assert {key for _, key, _ in todo} >= {"clinic/tehran/name", "clinic/shiraz/name",
                                           "doctor/tehran/dr-a", "doctor/shiraz/dr-a"}


async def test_a_practice_alone_is_also_built_in_its_own_folder_for_when_a_second_joins(
        tmp_path: Path) -> None:
    """Alone, a practice's words play from where they always were; they are built into its
    own folder too, where the line plays them once a second practice is loaded, so that load
    leaves the first practice's words as they were (not silent until the next build)."""
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[fa]\n"welcome" = "به {clinic} خوش آمدید."\n'
                        '[en]\n"welcome" = "Welcome to {clinic}."\n')
    alone = ClinicWords({"fa": "مطب تهران", "en": "Tehran Practice"}, {"fa": "", "en": ""},
                        {"dr-a": {"fa": "دکتر الف", "en": "Dr. A"}}, key="tehran")
    library = PromptLibrary.load(manifest, str(tmp_path), [alone])
    assert library.file("en", "clinic/name") == f"{tmp_path}/en/clinic/name"
    assert library.text("en", "welcome") == "Welcome to Tehran Practice."
    joined = library.practice("tehran")  # as the line plays it with a second practice
    assert joined.file("en", "welcome") == f"{tmp_path}/en/clinic/tehran/welcome"
    assert joined.text("en", "welcome") == "Welcome to Tehran Practice."
    assert joined.text("en", "doctor/dr-a") == "Dr. A"
    todo = {key for lang, key, _ in PromptBuild(library, tmp_path).plan() if lang == "en"}
    assert {"clinic/name", "clinic/tehran/name", "doctor/dr-a", "doctor/tehran/dr-a",
            "welcome", "clinic/tehran/welcome"} <= todo
