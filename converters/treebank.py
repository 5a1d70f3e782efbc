"""Token spans of NLTK's Treebank word tokenizer, as Label Studio's CONLL2003 export uses it.

A faithful re-implementation of ``nltk.tokenize.treebank.TreebankWordTokenizer.span_tokenize``
with the punctuation rules Label Studio patches in (``label_studio_sdk.converter.utils``: "/" is
split off like ";@#$%&"), so NLTK is not needed at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["found_tokens", "span_tokenize", "token_starts", "tokenize", "tokens_in_text"]

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


# A text whose lower case contains none of these cannot match any of _CONTRACTIONS2.
_CONTRACTION_WORDS = ("cannot", "d'ye", "gimme", "gonna", "gotta", "lemme", "more'n", "wanna")
# What the regex engine's case-insensitive matching equates with ASCII letters beyond lower():
# dotless i, long s, and the combining dot that "İ".lower() leaves after the "i".
_FOLD = (("\u0131", "i"), ("\u017f", "s"), ("\u0307", ""))
_PUNCT_QUOTE = _PUNCTUATION[6]
# Substituting each character of a class by " <char> " is the same as one str.replace per character.
_SYMBOLS = tuple((c, f" {c} ") for c in ";@#$/%&")  # [;@#$/%&]
_QMARKS = tuple((c, f" {c} ") for c in "?!")  # [?!]
_PARENS = tuple((c, f" {c} ") for c in "][(){}<>")  # [\]\[\(\)\{\}\<\>]
_STARTING_QUOTE_3 = _STARTING_QUOTES[2][0]

# The substitutions above refer to groups (r" \1 \2"), which Python before 3.12 expands with a
# loop in Python for every match; these functions give the same strings, cheaper.
_REPLACE: dict[str, Callable[[re.Match[str]], str]] = {
    r"\1 `` ": lambda m: m[1] + " `` ",
    r" \1 \2": lambda m: " " + m[1] + " " + m[2],
    r" \1 ": lambda m: " " + m[1] + " ",
    r"\1 \2\3 ": lambda m: m[1] + " " + m[2] + m[3] + " ",
    r"\1 ' ": lambda m: m[1] + " ' ",
    r"\1 \2 ": lambda m: m[1] + " " + m[2] + " ",
    r" \1 \2 ": lambda m: " " + m[1] + " " + m[2] + " ",
}
_STARTING_QUOTE_3_SUB = _REPLACE[_STARTING_QUOTES[2][1]]
_PUNCT_COLON_SUBS = [(regexp, _REPLACE[substitution]) for regexp, substitution in _PUNCTUATION[:2]]
_PUNCT_QUOTE_SUB = _REPLACE[_PUNCTUATION[6][1]]
_ENDING_QUOTES_SUBS = [(regexp, _REPLACE[substitution]) for regexp, substitution in _ENDING_QUOTES[2:]]
_CONTRACTION_SUB = _REPLACE[r" \1 \2 "]
# A ":" or "," followed by a digit, another ":" or ",", or nothing: the colon rules are run as regexes.
_COLON_SPECIAL = re.compile(r"[:,](?![^\d:,])")
_CLOSERS = "]})>\"'"  # [\]\)}>"\']
# What the text must hold for each of _ENDING_QUOTES[2:] to match (their second group and the space).
_ENDING_QUOTES_NEED = (
    ("' ", "'s ", "'S ", "'m ", "'M ", "'d ", "'D "),
    ("'ll ", "'LL ", "'re ", "'RE ", "'ve ", "'VE ", "n't ", "N'T "),
)


def tokenize(text: str) -> list[str]:
    """``TreebankWordTokenizer().tokenize(text)`` with Label Studio's punctuation rules.

    The substitutions run in NLTK's order. Literal ones are done with ``str.replace`` /
    ``str.replace`` (same result as the regex), and one is skipped only when the text cannot
    match it (e.g. no quote character at all), which leaves the result unchanged.
    """
    if '"' in text or "`" in text or "''" in text:
        if text.startswith('"'):  # ^\"  ->  ``
            text = "``" + text[1:]
        text = text.replace("``", " `` ")  # (``)  ->  " \1 "
        text = _STARTING_QUOTE_3.sub(_STARTING_QUOTE_3_SUB, text)
    if ":" in text or "," in text:
        if _COLON_SPECIAL.search(text) is None:
            # every ":" and "," is followed by another character (the usual ", "): the first rule
            # spaces each of them out and the second, at the end, finds none left
            text = text.replace(",", " , ").replace(":", " : ")
        else:
            for regexp, substitution in _PUNCT_COLON_SUBS:
                text = regexp.sub(substitution, text)
    text = text.replace("...", " ... ")
    for char, spaced in _SYMBOLS:
        if char in text:
            text = text.replace(char, spaced)
    if "." in text:
        # ([^\.])(\.)([\]\)}>"\']*)\s*$  ->  \1 \2\3 : only the last dot can match (what follows
        # it must be closers and white space), and the white space at the end becomes one " "
        if text[-1] == ".":  # the usual end of a sentence: nothing follows the dot
            if len(text) >= 2 and text[-2] != ".":
                text = text[:-1] + " . "
        else:
            stripped = text.rstrip()  # \s* ($ matches at the very end once \s* took a final newline)
            body = stripped.rstrip(_CLOSERS)
            if len(body) >= 2 and body[-1] == "." and body[-2] != ".":
                text = body[:-1] + " ." + stripped[len(body):] + " "
    for char, spaced in _QMARKS:
        if char in text:
            text = text.replace(char, spaced)
    if "' " in text:
        text = _PUNCT_QUOTE[0].sub(_PUNCT_QUOTE_SUB, text)
    for char, spaced in _PARENS:
        if char in text:
            text = text.replace(char, spaced)
    text = text.replace("--", " -- ")
    text = " " + text + " "
    if "'" in text or '"' in text:
        text = text.replace("''", " '' ").replace('"', " '' ")
        for (regexp, substitution), needs in zip(_ENDING_QUOTES_SUBS, _ENDING_QUOTES_NEED, strict=True):
            for part in needs:
                if part in text:  # else the regex cannot match
                    text = regexp.sub(substitution, text)
                    break
    lower = text.lower()
    if not lower.isascii():
        for char, folded in _FOLD:
            if char in lower:
                lower = lower.replace(char, folded)
    for word in _CONTRACTION_WORDS:
        if word in lower:
            for regexp in _CONTRACTIONS2:
                text = regexp.sub(_CONTRACTION_SUB, text)
            break
    if "'t" in lower:
        for regexp in _CONTRACTIONS3:
            text = regexp.sub(_CONTRACTION_SUB, text)
    return text.split()


def tokens_in_text(text: str) -> list[str]:
    """The tokens as they appear in ``text`` (quote tokens as written there)."""
    raw = tokenize(text)
    if '"' in text or "''" in text:
        matched = iter(m.group() for m in _QUOTES.finditer(text))
        return [next(matched) if tok in ('"', "``", "''") else tok for tok in raw]
    return raw


def not_found(token: str, text: str) -> ValueError:
    return ValueError(f'substring "{token}" not found in "{text}"')


def token_starts(text: str) -> tuple[list[str], list[int]]:
    """The tokens as they appear in ``text`` and their start offsets (code points)."""
    tokens = tokens_in_text(text)
    starts = []
    point = 0
    find = text.find
    for token in tokens:
        start = find(token, point)
        if start < 0:
            raise not_found(token, text)
        point = start + len(token)
        starts.append(start)
    return tokens, starts


def found_tokens(text: str) -> list[str]:
    """``token_starts(text)[0]``, which like Label Studio fails on a token not in the text,
    without looking each token up when the text holds none of the quotes ``tokenize`` rewrites
    (" `` ''): it then only adds and removes white space, so every token is in the text, in order."""
    if '"' in text or "`" in text or "''" in text:
        return token_starts(text)[0]
    return tokens_in_text(text)


def span_tokenize(text: str) -> list[tuple[int, int]]:
    """(start, end) code-point offsets of the tokens of ``text``."""
    tokens, starts = token_starts(text)
    return [(start, start + len(token)) for token, start in zip(tokens, starts, strict=True)]
