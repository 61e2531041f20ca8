"""Text to phonemes with the espeak-ng program, run as a child process per clause.

Piper voices were trained on espeak-ng's IPA (piper-phonemize links libespeak-ng), and Kokoro's
English on the same; running the `espeak-ng` program instead of linking its library keeps the
GPL-3.0 code out of our process (it is a separate program we talk to over a pipe), and one
clause costs ~15 ms of process start. Text goes in on stdin, never argv, so nothing in it is
an option; espeak's `[[...]]` phoneme-input syntax is broken up, so text is always read as text.

The program prints one line per clause it finds and drops the punctuation; we split clauses
ourselves and put each clause's punctuation back after its phonemes (as piper-phonemize does),
since both models use it for pauses and intonation.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata

ESPEAK = "espeak-ng"
TIMEOUT_S = 10.0
MAX_SENTENCE_CHARS = 300  # longer sentences are cut at clause or word boundaries

# Sentence ends: ASCII ones only before a space or the end ("3.5", "e.g." mid-sentence stay),
# CJK ones anywhere; a newline always ends one.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])|\n+")
_CLAUSE = re.compile(r"([^,;:.!?…、。，！？；：]+)([,;:.!?…、。，！？；：]*)")
_PUNCT = {"、": ",", "，": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":"}
_LANG_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)?\)")  # espeak's "(en)" marks
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Kanji: a reading needs a dictionary (MeCab/OpenJTalk), which espeak-ng does not have.
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z' -]*[A-Za-z]|[A-Za-z]")


class Unphonemizable(ValueError):
    """Text the phonemizer cannot read (a client error, said in words the client can act on)."""


_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "sr.", "jr.", "vs.", "etc.", "e.g.",
                            "i.e.", "no.", "fig.", "approx."})


def _split_sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        words = text[start:m.start()].rsplit(None, 1)
        if words and words[-1].lower() in _ABBREVIATIONS and "\n" not in m.group():
            continue  # "Dr. Smith" is one sentence
        pieces.append(text[start:m.start()])
        start = m.end()
    return pieces + [text[start:]]


def sentences(text: str) -> list[str]:
    """`text` cut into sentences (the unit audio is streamed in), none over MAX_SENTENCE_CHARS."""
    out: list[str] = []
    for piece in _split_sentences(_CONTROL.sub(" ", text)):
        piece = piece.strip()
        while len(piece) > MAX_SENTENCE_CHARS:
            head = piece[:MAX_SENTENCE_CHARS]
            cut = max(head.rfind(c) for c in ",;:、， ")
            cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 3 else MAX_SENTENCE_CHARS
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            out.append(piece)
    return out


def espeak(text: str, language: str) -> list[str]:
    """espeak-ng's IPA for `text` in `language`: one string per clause it found. Raises
    Unphonemizable for a language espeak-ng has no voice for, RuntimeError when it fails."""
    text = text.replace("[[", "[ [")
    try:
        done = subprocess.run([ESPEAK, "-q", "--ipa", "-b", "1", "-v", language, "--stdin"],
                              input=text.encode("utf-8"), capture_output=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RuntimeError("the espeak-ng program is not installed (apt install espeak-ng)") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"espeak-ng took over {TIMEOUT_S:g} s for one clause") from None
    err = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0 or "Failed to read voice" in err or "Voice does not exist" in err:
        if "voice" in err.lower():
            raise Unphonemizable(f"espeak-ng has no voice for language '{language}'")
        raise RuntimeError(f"espeak-ng failed (exit {done.returncode}): {err[-200:]}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return [_LANG_SWITCH.sub("", line).strip() for line in lines if line.strip()]


def clauses(sentence: str) -> list[tuple[str, str]]:
    """(text, punctuation) pairs of a sentence; CJK punctuation as its ASCII counterpart."""
    out = []
    for m in _CLAUSE.finditer(sentence):
        words, punct = m.group(1).strip(), "".join(_PUNCT.get(c, c) for c in m.group(2))
        if words:
            out.append((words, punct[:1]))
    return out


def phonemize(sentence: str, language: str) -> str:
    """One sentence as espeak-ng IPA with its punctuation, clauses joined by spaces (the form
    Piper and Kokoro were trained on). Raises Unphonemizable."""
    parts = []
    for words, punct in clauses(sentence):
        ipa = " ".join(espeak(words, language))
        if ipa:
            parts.append(ipa + punct)
    return " ".join(parts)


def phonemize_japanese(sentence: str) -> str:
    """One Japanese sentence (kana, with latin words) as Kokoro's Japanese phonemes: espeak-ng's
    `ja` voice for the kana, its `en-us` voice for latin words, then spelled as misaki's
    Japanese table spells them (affricates as one letter: ʨ ʥ ʦ ʣ; no stress marks; no
    diacritics the model's vocabulary lacks). Raises Unphonemizable for kanji."""
    if found := _KANJI.search(sentence):
        raise Unphonemizable(f"'{found.group()}' is a kanji, which this Japanese voice cannot read (its "
                             "phonemizer, espeak-ng, has no kanji dictionary): write the text in kana")
    parts = []
    for words, punct in clauses(sentence):
        pos, spoken = 0, []
        for m in _LATIN_RUN.finditer(words):
            spoken.append(_kokoro_ja(" ".join(espeak(words[pos:m.start()], "ja"))) if words[pos:m.start()].strip()
                          else "")
            spoken.append(" ".join(espeak(m.group(), "en-us")))
            pos = m.end()
        if words[pos:].strip():
            spoken.append(_kokoro_ja(" ".join(espeak(words[pos:], "ja"))))
        ipa = " ".join(s for s in spoken if s)
        if ipa:
            parts.append(ipa + punct)
    return " ".join(parts)


_LIGATURES = (("tɕ", "ʨ"), ("dʑ", "ʥ"), ("ts", "ʦ"), ("dz", "ʣ"))


def _kokoro_ja(ipa: str) -> str:
    decomposed = unicodedata.normalize("NFD", ipa)
    # Keep the nasal tilde (in the vocabulary); drop lowering/centralizing marks and stress.
    kept = "".join(c for c in decomposed if not unicodedata.combining(c) or c == "\u0303")
    kept = kept.replace("ˈ", "").replace("ˌ", "").replace("ᵝ", "")
    for pair, one in _LIGATURES:
        kept = kept.replace(pair, one)
    return unicodedata.normalize("NFC", kept)
