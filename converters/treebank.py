"""Token spans of NLTK's Treebank word tokenizer, as Label Studio's CONLL2003 export uses it.

A faithful re-implementation of ``nltk.tokenize.treebank.TreebankWordTokenizer.span_tokenize``
with the punctuation rules Label Studio patches in (``label_studio_sdk.converter.utils``: "/" is
split off like ";@#$%&"), so NLTK is not needed at run time.
"""

from __future__ import annotations

import re

__all__ = ["span_tokenize"]

_STARTING_QUOTES = [
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
]
# Label Studio replaces TreebankWordTokenizer.PUNCTUATION with this list.
_PUNCTUATION = [
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.\.\."), r" ... "),
    (re.compile(r"[;@#$/%&]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = [
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS2 = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
    )
]
_CONTRACTIONS3 = [re.compile(r"(?i) ('t)(?#X)(is)\b"), re.compile(r"(?i) ('t)(?#X)(was)\b")]
_QUOTES = re.compile(r"``|'{2}|\"")


def tokenize(text: str) -> list[str]:
    """``TreebankWordTokenizer().tokenize(text)`` with Label Studio's punctuation rules."""
    for regexp, substitution in _STARTING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp, substitution in _PUNCTUATION:
        text = regexp.sub(substitution, text)
    regexp, substitution = _PARENS_BRACKETS
    text = regexp.sub(substitution, text)
    regexp, substitution = _DOUBLE_DASHES
    text = regexp.sub(substitution, text)
    text = " " + text + " "
    for regexp, substitution in _ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in _CONTRACTIONS2:
        text = regexp.sub(r" \1 \2 ", text)
    for regexp in _CONTRACTIONS3:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def span_tokenize(text: str) -> list[tuple[int, int]]:
    """(start, end) code-point offsets of the tokens of ``text``."""
    raw = tokenize(text)
    if '"' in text or "''" in text:
        matched = iter(m.group() for m in _QUOTES.finditer(text))
        tokens = [next(matched) if tok in ('"', "``", "''") else tok for tok in raw]
    else:
        tokens = raw
    spans = []
    point = 0
    for token in tokens:
        start = text.find(token, point)
        if start < 0:
            raise ValueError(f'substring "{token}" not found in "{text}"')
        point = start + len(token)
        spans.append((start, point))
    return spans
