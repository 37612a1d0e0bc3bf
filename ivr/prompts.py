"""Prompt names to files and texts: one library per language, from the manifest and the data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clinic.specialties import SPECIALTIES
from clinic.staff_toml import StaffToml
from ivr import speech

LANGUAGES = speech.LANGUAGES


@dataclass(frozen=True)
class ClinicWords:
    """The clinic's own words that become prompts: its name, address, doctors' names."""

    name: Mapping[str, str]
    address: Mapping[str, str]
    doctors: Mapping[str, Mapping[str, str]]


class PromptLibrary:
    """Knows every prompt's text per language and where Asterisk finds its file."""

    def __init__(self, texts: Mapping[str, Mapping[str, str]], files_root: str) -> None:
        self.texts = {lang: dict(texts.get(lang, {})) for lang in LANGUAGES}
        self.files_root = files_root.rstrip("/")

    @classmethod
    def load(cls, manifest: Path, files_root: str, clinic: ClinicWords | None = None
             ) -> PromptLibrary:
        """Merge the hand-written manifest with fragments made by rule and clinic data."""
        manifest_doc = StaffToml.load(manifest)
        manifest_doc.table((), LANGUAGES)
        for lang in LANGUAGES:
            for key, text in manifest_doc.table((lang,), manifest_doc.data.get(lang, {})).items():
                if not isinstance(text, str):
                    manifest_doc.error((lang, key), f"expected the prompt's words, got {text!r}")
        manifest_doc.raise_problems()
        written = manifest_doc.data
        texts: dict[str, dict[str, str]] = {}
        for lang in LANGUAGES:
            merged = speech.fragment_texts(lang)
            merged.update({f"specialty/{key}": names[0 if lang == "fa" else 1]
                           for key, names in SPECIALTIES.items()})
            merged.update({f"menu/press-{n}": _press(n, lang) for n in range(10)})
            if clinic is not None:
                merged["clinic/name"] = clinic.name.get(lang, "")
                merged["clinic/address"] = clinic.address.get(lang, "")
                merged.update({f"doctor/{key}": names.get(lang, "")
                               for key, names in clinic.doctors.items()})
            merged.update(written.get(lang, {}))
            texts[lang] = merged
        return cls(texts, files_root)

    def file(self, lang: str, key: str) -> str:
        """The path Asterisk plays (no extension: Asterisk picks the format it has)."""
        return f"{self.files_root}/{lang}/{key}"

    def files(self, lang: str, keys: Iterable[str]) -> list[str]:
        """Paths for several prompts."""
        return [self.file(lang, key) for key in keys]

    def key_of(self, path: str) -> tuple[str, str] | None:
        """Turn a played path back into (language, key), for transcripts and the try-out."""
        prefix = self.files_root + "/"
        if not path.startswith(prefix):
            return None
        lang, _, key = path[len(prefix):].partition("/")
        return (lang, key) if lang in LANGUAGES else None

    def text(self, lang: str, key: str) -> str | None:
        """The words of a prompt, or None if no text is known."""
        return self.texts.get(lang, {}).get(key)

    def missing(self, lang: str, keys: Iterable[str]) -> list[str]:
        """Which of these prompts have no text in a language."""
        return [key for key in keys if key not in self.texts.get(lang, {})]


def _press(n: int, lang: str) -> str:
    word = speech.fragment_texts(lang)[f"num/{n}"]
    return f"{word} را فشار دهید" if lang == "fa" else f"press {word}"
