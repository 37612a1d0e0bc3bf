"""Prompt names to files and texts: one library per language, from the manifest and the data."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clinic.specialties import SPECIALTIES
from clinic.staff_toml import StaffToml
from ivr import speech

LANGUAGES = speech.LANGUAGES


OWN_WORDS = ("clinic/", "doctor/")
"""Prompts a practice has its own of: its name and address, its doctors' names."""
PRACTICE_NAME = "{clinic}"
"""In the manifest's words, the practice's name: such a prompt is said per practice."""


def _own_words(clinic: ClinicWords, lang: str, folder: str, named: frozenset[str],
               templates: Mapping[str, str]) -> dict[str, str]:
    """A practice's own prompts in one language, keyed as its `folder` plays them."""
    own = functools.partial(own_key, folder, named=named)
    words = {own(f"doctor/{key}"): names.get(lang, "") for key, names in clinic.doctors.items()}
    if clinic.name:
        words[own("clinic/name")] = clinic.name.get(lang, "")
        words[own("clinic/address")] = clinic.address.get(lang, "")
    words.update({own(key): text.replace(PRACTICE_NAME, clinic.name.get(lang, ""))
                  for key, text in templates.items()})
    return words


def own_key(folder: str, key: str, named: frozenset[str] = frozenset()) -> str:
    """Where a practice's own prompt lives: "clinic/name" of practice "shiraz-eye" is
    "clinic/shiraz-eye/name", and a prompt that names it (`named`), "welcome", is
    "clinic/shiraz-eye/welcome"; with one practice (folder "") each is where it always was."""
    if not folder:
        return key
    if key.startswith(OWN_WORDS):
        head, _, rest = key.partition("/")
        return f"{head}/{folder}/{rest}"
    return f"clinic/{folder}/{key}" if key in named else key


@dataclass(frozen=True)
class ClinicWords:
    """A practice's own words that become prompts: its name, address, doctors' names."""

    name: Mapping[str, str]
    address: Mapping[str, str]
    doctors: Mapping[str, Mapping[str, str]]
    folder: str = ""
    """The practice's key when the store holds several; "" for the only one."""
    key: str = ""
    """The only practice's key: its words are also said into its own folder, so that they
    are there when a second practice joins and the line plays them from it."""


class PromptLibrary:
    """Knows every prompt's text per language and where Asterisk finds its file; a practice's
    view of it (`practice`) plays that practice's own words: its name, address and doctors,
    and the prompts that name it."""

    def __init__(self, texts: Mapping[str, Mapping[str, str]], files_root: str,
                 folder: str = "", templates: Mapping[str, Mapping[str, str]] | None = None
                 ) -> None:
        self.texts = {lang: dict(texts.get(lang, {})) for lang in LANGUAGES}
        self.files_root = files_root.rstrip("/")
        self.folder = folder
        self.templates = templates or {}
        """The manifest's words that say the practice's name, by language and prompt."""
        self.named = frozenset(key for words in self.templates.values() for key in words)

    def practice(self, folder: str) -> PromptLibrary:
        """The same prompts, with practice `folder`'s own words: a view sharing the texts,
        so that each practice (and each call nobat dials) costs no copy of them."""
        view = copy.copy(self)
        view.folder = folder
        return view

    @classmethod
    def load(cls, manifest: Path, files_root: str, clinics: Iterable[ClinicWords] = ()
             ) -> PromptLibrary:
        """Merge the hand-written manifest with fragments made by rule and clinic data; a
        prompt whose words hold {clinic} is said once per practice, with its name."""
        manifest_doc = StaffToml.load(manifest)
        manifest_doc.table((), LANGUAGES)
        for lang in LANGUAGES:
            for key, text in manifest_doc.table((lang,), manifest_doc.data.get(lang, {})).items():
                if not isinstance(text, str):
                    manifest_doc.error((lang, key), f"expected the prompt's words, got {text!r}")
        manifest_doc.raise_problems()
        written: dict[str, dict[str, str]] = manifest_doc.data
        templates = {lang: {key: text for key, text in written.get(lang, {}).items()
                            if PRACTICE_NAME in text} for lang in LANGUAGES}
        named = frozenset(key for words in templates.values() for key in words)
        practices = list(clinics) or [ClinicWords({}, {}, {})]
        texts: dict[str, dict[str, str]] = {}
        for lang in LANGUAGES:
            merged = speech.fragment_texts(lang)
            merged.update({f"specialty/{key}": names[0 if lang == "fa" else 1]
                           for key, names in SPECIALTIES.items()})
            merged.update({f"menu/press-{n}": _press(n, lang) for n in range(10)})
            for clinic in practices:
                for folder in dict.fromkeys((clinic.folder, clinic.folder or clinic.key)):
                    merged.update(_own_words(clinic, lang, folder, named, templates[lang]))
            merged.update({key: text for key, text in written.get(lang, {}).items()
                           if key not in named})
            texts[lang] = merged
        return cls(texts, files_root, templates=templates)

    def file(self, lang: str, key: str) -> str:
        """The path Asterisk plays (no extension: Asterisk picks the format it has)."""
        return f"{self.files_root}/{lang}/{own_key(self.folder, key, self.named)}"

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
        return self.texts.get(lang, {}).get(own_key(self.folder, key, self.named))

    def missing(self, lang: str, keys: Iterable[str]) -> list[str]:
        """Which of these prompts have no text in a language (one that names the practice
        has the manifest's words for it, said for each practice)."""
        return [key for key in keys if self.text(lang, key) is None
                and key not in self.templates.get(lang, {})]


def _press(n: int, lang: str) -> str:
    word = speech.fragment_texts(lang)[f"num/{n}"]
    return f"{word} را فشار دهید" if lang == "fa" else f"press {word}"
