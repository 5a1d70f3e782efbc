"""The fast paths of the converters give exactly what the plain ones give.

orjson is optional: the streaming reader, ``compact_json`` and every format must give the same
results with and without it. The Treebank tokenizer's shortcuts must give NLTK's regex passes'
result. Small files are written by a background thread, in order.
"""

from __future__ import annotations

import concurrent.futures
import copy
import io
import json
import os
import random
import re
import signal
import urllib.parse
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import converters
from converters import coco, fastio, images, inputs, items, json_export, jsonstream, media, parallel, treebank
from converters.fastio import SmallFiles, compact_json
from tests.converters_helpers import EXPORTS, PROJECTS, files_under, load_tasks, needs_fixtures

HAVE_ORJSON = jsonstream.have_orjson()


@pytest.fixture(params=["orjson", "json"] if HAVE_ORJSON else ["json"])
def json_backend(request, monkeypatch):
    """Run the test with orjson (when installed) and with the json module only."""
    if request.param == "json":
        monkeypatch.setattr(jsonstream, "_orjson", None)
        monkeypatch.setattr(fastio, "_orjson", None)
    return request.param


# ------------------------------------------------------------------------------ JSON array reader

_ATOMS = ["{", "}", "[", "]", '},{"id":', '}, {"id": ', '"', "\\", "é", "😀", ",", " ", "x", "\n", "1e5"]


def _random_tasks(rnd: random.Random) -> list:
    def text() -> str:
        return "".join(rnd.choice(_ATOMS) for _ in range(rnd.randint(0, 10)))

    def value(depth: int = 0) -> object:
        r = rnd.random()
        if depth > 3 or r < 0.3:
            return rnd.choice([1, -2.5, 1e-05, 2**70, -(2**63) - 1, 12345678901234567890, None, True, text(),
                               float("nan"), float("inf"), "ok"])
        if r < 0.6:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {text(): value(depth + 1) for _ in range(rnd.randint(0, 4))}

    tasks: list = []
    for i in range(rnd.randint(0, 10)):
        task: object = {"id": i, "annotations": [{"id": j, "result": [value() for _ in range(rnd.randint(0, 3))]}
                                                 for j in range(rnd.randint(0, 3))], "data": {"text": text()}}
        if rnd.random() < 0.2:
            task = {"data": value(), "id": i}
        elif rnd.random() < 0.05:
            task = value()
        tasks.append(task)
    return tasks


def test_array_reader_equals_json_loads(json_backend):
    rnd = random.Random(11)
    for _ in range(1500):
        tasks = _random_tasks(rnd)
        style = rnd.choice([{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}])
        text = json.dumps(tasks, **style)
        if rnd.random() < 0.3:
            text = " \n" + text + "\n "
        chunk = rnd.choice([1, 3, 7, 64, 1 << 20])
        got = [UNREADABLE if isinstance(v, jsonstream.Unreadable) else v
               for v in jsonstream.iter_array_file(io.BytesIO(text.encode()), chunk)]
        # an element holding NaN or Infinity (JSON cannot hold them) is skipped, not read as nan
        expected = [UNREADABLE if _non_finite(v) else v for v in json.loads(text)]
        # compare through json.dumps: ints must stay ints (not floats)
        assert json.dumps(got) == json.dumps(expected), (chunk, text[:200])


UNREADABLE = "<skipped>"


def _non_finite(value: object) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def test_skipped_elements_are_named_and_the_rest_is_read(json_backend):
    deep = "[" * 5000 + "]" * 5000
    text = ('[{"id": 1}, {"id": 2, "x": NaN}, {"id": 3, "data": ' + deep + '}, [' + deep + '],'
            ' {"id": 4, "n": 1e400}, {"id": 5, "s": "] } [ {"}] trailing')
    got = list(jsonstream.iter_array_file(io.BytesIO(text.encode()), 64))
    assert [v["id"] for v in got if isinstance(v, dict)] == [1, 5]
    skipped = [(v.task_id, v.reason) for v in got if isinstance(v, jsonstream.Unreadable)]
    assert [task_id for task_id, _ in skipped] == [2, 3, None, 4, None]
    assert "NaN" in skipped[0][1] and "nests deeper" in skipped[1][1] and "1e400" in skipped[3][1]
    assert "bytes after the task array" in skipped[4][1]


@pytest.mark.parametrize("text,message", [
    ("", "file is empty"),
    ("[", "unexpected end of file"),
    ("[{]", "invalid JSON"),
    ("[1 2]", "expected ',' or ']'"),
    ('[{"a":1},', "unexpected end of file"),
    ("{}", "not a JSON array"),
])
def test_array_reader_errors(text, message, json_backend):
    with pytest.raises(jsonstream.JSONStreamError, match=re.escape(message)):
        list(jsonstream.iter_array_file(io.BytesIO(text.encode()), 4))


def test_array_reader_reports_bad_utf8(tmp_path, json_backend):
    path = tmp_path / "in.json"
    path.write_bytes(b'[{"id": 1, "data": {"text": "a"}}, {"id": 2, "data": {"text": "\xff"}}]')
    with pytest.raises(inputs.InputError, match="not UTF-8"):
        list(inputs.iter_input_tasks(path))


def test_long_integers_stay_exact(json_backend):
    text = '[{"id": 1}, {"id": 2, "n": 123456789012345678901234567890}, {"id": 3, "m": -9223372036854775809}]'
    got = list(jsonstream.iter_array_file(io.BytesIO(text.encode())))
    assert got[1]["n"] == 123456789012345678901234567890 and isinstance(got[2]["m"], int)


# ------------------------------------------------------------------------------ compact_json

def _indented_json_bytes_decoded(value: object) -> str:
    return fastio.indented_json_bytes(value).decode("utf-8")


@pytest.mark.parametrize("fast,style", [(compact_json, {"separators": (",", ":")}),
                                        (fastio.indented_json, {"indent": 2}),
                                        (_indented_json_bytes_decoded, {"indent": 2})],
                         ids=["compact", "indented", "indented-bytes"])
def test_compact_json_equals_json_dumps(fast, style, json_backend):
    encode = json.JSONEncoder(ensure_ascii=False, **style).encode
    rnd = random.Random(5)

    def value(depth: int = 0) -> object:
        r = rnd.random()
        if depth > 3 or r < 0.5:
            return rnd.choice([rnd.uniform(-10, 10) * 10 ** rnd.randint(-30, 30), 2**70, float("nan"), float("-inf"),
                               None, True, 'a/é\x01\u2028😀"', 0, -0.0, 1e-05, 7, 0.0001, 1e16, 28.333333333333332,
                               "x1e5", "e-7", -9.9e-05, 5e-05, 10.00001, 100.00000000000001, "0.00001"])
        if r < 0.75:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(["k", "x0e1", 1, 2.5, "é", None]): value(depth + 1) for _ in range(rnd.randint(0, 3))}

    for _ in range(20000):
        v = value()
        assert fast(v) == encode(v), repr(v)


def test_number_lines_are_the_numbers_as_str_writes_them(json_backend):
    """YOLO's label lines: every number as ``str()`` writes it (what Label Studio's converter
    does), also where orjson would spell it otherwise (exponents, NaN, integers beyond 64 bits)."""
    rnd = random.Random(7)
    specials = [1e-05, 5e-05, 1.5e16, 1e16, 1e22, 0.0001, -0.0, 0.0, 2**70, float("nan"), float("inf"),
                28.333333333333332, 0.33333333333333337, 10.00001, 1, 0, 2]
    for _ in range(3000):
        rows = [[rnd.randint(0, 80)] + [rnd.choice(specials) if rnd.random() < 0.1 else rnd.random()
                                        for _ in range(rnd.choice([0, 4, 8, 11]))]
                for _ in range(rnd.randint(0, 4))]
        want = "\n".join(" ".join(str(v) for v in row) for row in rows).encode()
        assert fastio.number_lines(rows) == want, repr(rows)


def test_orjson_writes_numbers_that_only_hold_four_zeros():
    """Only a number that starts "0.0000" is written by orjson unlike the json module; one that
    holds those digits further on (a box at 10.00001) keeps the fast encoder."""
    pytest.importorskip("orjson")
    assert fastio.exact_orjson([10.00001, 100.00000000000001]) is not None
    assert fastio.exact_orjson([1, 5e-05]) is None and fastio.exact_orjson({"x": -9.9e-05}) is None


def test_float_texts_are_reprs(json_backend):
    """COCO writes a chunk's box numbers with one call: each must be the float's ``repr``, the
    json module's way, orjson's different spellings (``0.00001``, ``1e16``) included."""
    rnd = random.Random(9)
    values = [rnd.uniform(-1, 1) * 10 ** rnd.randint(-30, 30) for _ in range(20000)]
    values += [rnd.random() * 100 for _ in range(20000)]
    values += [0.0, -0.0, 1e-05, -9.9e-05, 5e-05, 0.0001, 1e16, -1.5e20, 1e-07, 5e-324, 1.7976931348623157e308,
               10.00001, 37.00000000000001, 1e15]
    rnd.shuffle(values)
    assert fastio.float_texts(values) == [repr(v) for v in values]
    assert fastio.float_texts(values[:7]) == [repr(v) for v in values[:7]]
    assert fastio.float_texts([]) == []


# ------------------------------------------------------------------------------ Treebank tokenizer

def _reference_tokenize(text: str) -> list[str]:
    """NLTK's TreebankWordTokenizer.tokenize with Label Studio's punctuation: every regex, in order."""
    for regexp, substitution in treebank._STARTING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp, substitution in treebank._PUNCTUATION:
        text = regexp.sub(substitution, text)
    for regexp, substitution in (treebank._PARENS_BRACKETS, treebank._DOUBLE_DASHES):
        text = regexp.sub(substitution, text)
    text = " " + text + " "
    for regexp, substitution in treebank._ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in (*treebank._CONTRACTIONS2, *treebank._CONTRACTIONS3):
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def test_tokenizer_shortcuts_change_nothing():
    pieces = ["can", "not", "Cannot", "d'ye", "gim", "me", "GONNA", "gotta", "lemme", "more'n", "wanna ", "'t", "is",
              "'Twas", '"', "''", "``", "`", "'", "' ", "'s", "'ll", "n't", "N'T", ":", ",", "1,000", "...", ".",
              ";", "@", "#", "$", "/", "%", "&", "?", "!", "(", ")", "[", "]", "{", "}", "<", ">", "--", "-", " ",
              "\n", "word", "Ünï", "😀", "9", "٣", "'re", "İ", "ı", "ſ", "K", "gımme", "GİMME"]
    rnd = random.Random(3)
    for _ in range(30000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 20)))
        assert treebank.tokenize(text) == _reference_tokenize(text), text


def test_tokenizer_only_moves_white_space_in_a_text_without_quotes():
    """``treebank.found_tokens`` (CONLL2003's tokens of a text without a span) skips looking each
    token up when the text has none of the quotes the tokenizer rewrites (" `` ''): right only
    if the tokenizer then just adds and removes white space, so that every token is in the
    text, in order."""
    from converters.conll2003 import tokens_and_tags

    pieces = ["can", "not", "Cannot", "d'ye", "GONNA", "lemme", "'t", "is", "'Twas", "'", "' ", "'s", "'ll", "n't",
              ":", ",", "1,000", "...", ".", ";", "@", "/", "%", "&", "?", "!", "(", ")", "[", "]", "<", ">", "--",
              " ", "\n", "\xa0", "\u2028", "word", "Ünï", "😀", "٣", "İ", "ſ", "gımme"]
    rnd = random.Random(11)
    for _ in range(30000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 20)))
        tokens, starts = treebank.token_starts(text)
        assert "".join(tokens) == "".join(text.split()), text
        assert all(text[start:start + len(token)] == token for token, start in zip(tokens, starts, strict=True))
        assert tokens_and_tags(text, None) == (tokens, ["O"] * len(tokens))


def test_conll_annotations_of_one_task_give_the_blocks_they_give_alone():
    """A task's annotations share its text, which CONLL2003 tokenizes once: each annotation's
    block is the one it gives as a task of its own, with or without spans, before or after one
    with spans, in texts with and without the quotes the tokenizer rewrites."""
    from converters.conll2003 import ConllJob

    config = converters.parse_label_config(_NER_CONFIG)
    job = ConllJob(config)

    def annotation(number: int, spans: list[tuple[int, int]]) -> dict:
        return {"id": number, "completed_by": 1, "created_at": f"2026-01-0{number}T00:00:00Z", "result": [
            {"from_name": "ner", "to_name": "text", "type": "labels",
             "value": {"start": start, "end": end, "labels": ["PER"]}} for start, end in spans]}

    def block(task: dict) -> str:
        warnings: list = []
        text = job.process(task, lambda *w: warnings.append(w), True)
        assert not warnings
        return text

    for text in ['Ann met Bob, said "hi" and left.', "Ann met Bob. ``Quoted'' too", "Ann met Bob (again) -- twice."]:
        kinds = [annotation(1, [(0, 3), (8, 11)]), annotation(2, []), annotation(3, [(4, 7)]), annotation(4, [])]
        for order in (kinds, kinds[::-1]):
            alone = [block({"id": 1, "data": {"text": text}, "annotations": [a]}) for a in order]
            together = block({"id": 1, "data": {"text": text}, "annotations": order})
            # Label Studio's items: the newest annotation first (here: the highest id)
            expected = sorted(zip((a["id"] for a in order), alone, strict=True), reverse=True)
            assert together == "".join(b for _, b in expected), text
            assert len(set(alone)) > 1  # the blocks differ: each got its own tags


def test_url_path_basename_is_urlparse_s():
    rng = random.Random(7)
    parts = ["http://", "https://", "HTTP://", "ftp://", "//", "h.example.com", "[::1]", "xn--strae", "straße.de",
             "ſ.de", ":8080", "@", "/", "/a", "/b.jpg", "%20", "ß", ";p", "?q=1", "#f", "\t", "\n", "\\", " ", ".."]
    urls = ["http://cdn.example.org/street/frame-0042.jpg", "https://images.example.com/street/Straße%20Nr.12.jpg",
            "http://a/b;c/d.png", "http://a/b/c;d.png", "http://host", "http://host/", "https://[::1]/x.jpg"]
    urls += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 7))) for _ in range(20000)]
    for url in urls:
        try:
            expected = os.path.basename(urllib.parse.urlparse(url).path)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                media.url_path_basename(url)
            continue
        assert media.url_path_basename(url) == expected, url


# ------------------------------------------------------------------------------ small files

@pytest.mark.parametrize("threaded", [True, False])
def test_small_files_in_order(tmp_path, threaded):
    (tmp_path / "old.txt").write_text("kept", encoding="utf-8")
    with SmallFiles(tmp_path, threaded=threaded) as files:
        for i in range(3000):
            files.write(f"{i % 700}.txt", f"{i}\n".encode())
        files.touch("old.txt")  # exists: keeps its content
        files.touch("new.txt")
        files.write("é 1.txt", b"x")
        files.touch("é 1.txt")
    assert (tmp_path / "0.txt").read_text() == "2800\n"
    assert (tmp_path / "699.txt").read_text() == "2799\n"
    assert (tmp_path / "old.txt").read_text() == "kept"
    assert (tmp_path / "new.txt").read_bytes() == b""
    assert (tmp_path / "é 1.txt").read_text() == "x"


@pytest.mark.parametrize("threaded", [True, False])
def test_small_files_error_is_raised_with_the_path(tmp_path, threaded):
    target = tmp_path / "labels"
    target.mkdir()
    with pytest.raises(OSError) as info:
        with SmallFiles(target, threaded=threaded) as files:
            for i in range(2000):
                files.write(("x" * 300 if i == 700 else str(i)) + ".txt", b"1")  # name too long
    assert info.value.filename == os.path.join(target, "x" * 300 + ".txt")


# ------------------------------------------------------------------------------ formats, both backends

def _outputs(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for rel in sorted(files_under(root)):
        data = (root / rel).read_bytes()
        if rel == "result.json" and b'"info"' in data:
            parsed = json.loads(data)
            parsed.pop("info", None)
            out[rel] = parsed
        else:
            out[rel] = data
    return out


@needs_fixtures
@pytest.mark.parametrize("slug", PROJECTS)
def test_every_format_is_the_same_without_orjson(slug, tmp_path, monkeypatch):
    config = converters.parse_label_config(EXPORTS / slug / "label_config.xml")
    source = EXPORTS / slug / "JSON.json"
    for fmt, reason in converters.applicable(config).items():
        if reason is not None:
            continue
        converters.get(fmt).convert(inputs.iter_input_tasks(source), config, tmp_path / "a" / fmt)
        with monkeypatch.context() as m:
            m.setattr(jsonstream, "_orjson", None)
            m.setattr(fastio, "_orjson", None)
            m.setattr(json_export, "_orjson", None)
            converters.get(fmt).convert(inputs.iter_input_tasks(source), config, tmp_path / "b" / fmt)
        assert _outputs(tmp_path / "a" / fmt) == _outputs(tmp_path / "b" / fmt), fmt


# ------------------------------------------------------------------------------ worker processes

PER_TASK_FORMATS = ["JSON", "JSON_MIN", "VOC", "CONLL2003", "CSV", "TSV", "COCO", "YOLO", "YOLO_OBB"]


def _convert_file(path: Path, fmt: str, cfg, out: Path, workers: int) -> list[tuple[object, str]]:
    warnings: list[tuple[object, str]] = []
    options = converters.ConvertOptions(warn=lambda task_id, message: warnings.append((task_id, message)),
                                        workers=workers)
    tasks = inputs.iter_input_tasks(path)
    assert isinstance(tasks, parallel.ArrayFile)
    if workers > 1:
        assert parallel.worker_count(tasks, options) == workers
    converters.get(fmt).convert(tasks, cfg, out, options)
    return warnings


def _tricky_export(slug: str, path: Path, data_first: bool = False) -> None:
    """The fixture's tasks, many times, with things that defeat the fast paths: braces inside
    strings (wrong guesses), a label missing from the config (a new class id), a list element,
    a malformed task, a long integer and a NaN."""
    base = json.loads((EXPORTS / slug / "JSON.json").read_text(encoding="utf-8"))
    tasks: list = []
    for i in range(60):
        for task in base:
            task = json.loads(json.dumps(task))
            task["id"] = len(tasks) + 1
            if i == 7 and task["annotations"]:
                result = task["annotations"][0]["result"]
                if result and isinstance(result[0].get("value"), dict):
                    for key in ("rectanglelabels", "polygonlabels", "labels"):
                        if key in result[0]["value"]:
                            result[0]["value"][key] = ["Zeppelin"]
            if i == 11:
                task["meta"] = {"note": "}}, {\"id\": 1, ]] {{"}
            if i == 13:
                task["meta"] = {"big": 123456789012345678901234567890, "nan": float("nan")}
            if i >= 40 and len(task["annotations"]) > 1:
                # balances the braces and brackets of an inner separator: a wrong cut
                task["annotations"][0]["note"] = "]}"
                # objects that start like tasks, nested in one: a wrong cut without counting
                task["data"]["related"] = [{"id": 1, "annotations": []}, {"id": 2, "annotations": []}]
            tasks.append(task)
        if i == 20:
            tasks.append([base[0], base[-1]])
            tasks.append({"id": "bad", "annotations": 5, "data": {}})
    if data_first:  # tasks that do not start with an integer id: batches are cut by counting braces
        for t in tasks:
            if isinstance(t, dict) and isinstance(t.get("data"), dict) and "related" in t["data"]:
                # two "}" inside a string balance the braces at the separator between the related
                # objects, which now start like tasks ({"data": ...): a wrong cut
                t["data"] = {"note": "}}", **t["data"], "related": [{"data": 1}, {"data": 2}]}
        tasks = [{"data": t.pop("data"), **t} if isinstance(t, dict) else t for t in tasks]
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
@pytest.mark.parametrize("decoder", ["msgspec", "orjson"])
@pytest.mark.parametrize("fmt", PER_TASK_FORMATS)
def test_workers_give_the_same_output(fmt, decoder, tmp_path, monkeypatch):
    """Workers give the output and warnings of one process, whether they decode only the fields
    the format reads (msgspec; batches with NaN, a list element or a malformed task do not fit
    and are parsed whole) or whole tasks."""
    if decoder == "msgspec":
        pytest.importorskip("msgspec")
    else:
        monkeypatch.setattr(parallel, "_msgspec", None)
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 20000)  # many batches
    slug = {"CONLL2003": "text-ner", "CSV": "text-classification", "TSV": "image-keypoints"}.get(fmt, "image-bbox")
    source = tmp_path / "in.json"
    _tricky_export(slug, source)
    cfg = converters.parse_label_config(EXPORTS / slug / "label_config.xml")
    one = _convert_file(source, fmt, cfg, tmp_path / "one", 0)
    two = _convert_file(source, fmt, cfg, tmp_path / "two", 2)
    assert two == one and one  # the same warnings, in the same order (the malformed task at least)
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")


def test_yolo_label_file_names_drop_the_extension_as_splitext_does():
    import posixpath

    from converters import yolo

    for url in ["/data/upload/2/a.png", "s3://b/x/img.tar.gz", "s3://b/.hidden", "s3://b/...", "s3://b/..a.b",
                "s3://b/noext", "s3://b/trailing.", "/data/upload/1/" + "n" * 300 + ".jpg", "gs://b/ü.JPG"]:
        base = posixpath.basename(url)
        assert yolo._label_file_name(url) == posixpath.splitext(base)[0][:251] + ".txt", url


def test_yolo_chunk_writes_each_name_once_with_what_writing_in_order_leaves():
    """A label file written several times in a chunk (a task with several annotations) ends
    with the last content it got; an empty label after content does not clear it."""
    from converters import yolo

    cfg = converters.parse_label_config(
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
        '<Label value="Car"/></RectangleLabels></View>')
    job = yolo.YoloJob(cfg)
    chunk = job.combine([[("a.txt", b"1\n"), ("a.txt", None)], [("b.txt", None), ("b.txt", b"2\n")],
                         [("c.txt", None)], [("a.txt", b"3\n"), ("c.txt", None)]])
    assert sorted(chunk) == [("a.txt", b"3\n", False), ("b.txt", b"2\n", False), ("c.txt", None, False)]


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
def test_yolo_workers_leave_files_that_exist_to_the_main_process(tmp_path, monkeypatch):
    """Workers create only new label files; one that exists before the run (or is made by
    another task) is written in task order by the main process, as without workers."""
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 20000)
    source = tmp_path / "in.json"
    _tricky_export("image-bbox", source)
    cfg = converters.parse_label_config(EXPORTS / "image-bbox" / "label_config.xml")
    _convert_file(source, "YOLO", cfg, tmp_path / "probe", 0)
    names = sorted(p.name for p in (tmp_path / "probe" / "labels").iterdir())
    for run in ("one", "two"):
        labels = tmp_path / run / "labels"
        labels.mkdir(parents=True)
        for name in names[::3]:
            (labels / name).write_bytes(b"left from an earlier run\n")
    one = _convert_file(source, "YOLO", cfg, tmp_path / "one", 0)
    two = _convert_file(source, "YOLO", cfg, tmp_path / "two", 2)
    assert two == one
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")
    assert _outputs(tmp_path / "one") != _outputs(tmp_path / "probe")  # some old files were kept (empty labels)


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
@pytest.mark.parametrize("data_first", [False, True], ids=["id-first", "data-first"])
def test_workers_stop_at_a_wrong_guess_and_read_the_rest_exactly(data_first, tmp_path, monkeypatch):
    source = tmp_path / "in.json"
    _tricky_export("text-ner", source, data_first)
    cfg = converters.parse_label_config(EXPORTS / "text-ner" / "label_config.xml")
    restarts: list[int] = []
    original = parallel.ArrayFile.iter_from

    def spy(self, offset):
        if offset is not None:
            restarts.append(offset)
        return original(self, offset)

    monkeypatch.setattr(parallel.ArrayFile, "iter_from", spy)
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 3000)
    _convert_file(source, "CONLL2003", cfg, tmp_path / "two", 2)
    assert restarts  # the "]}" in an annotation fooled the cutter
    monkeypatch.setattr(parallel.ArrayFile, "iter_from", original)
    _convert_file(source, "CONLL2003", cfg, tmp_path / "one", 0)
    assert (tmp_path / "one" / "result.conll").read_bytes() == (tmp_path / "two" / "result.conll").read_bytes()


_run_batch = parallel._run_batch
_batches_here: list[int] = []  # (each forked worker has its own)


def _dies_at_its_fourth_batch(offset: int, length: int) -> object:
    """``parallel._run_batch`` in a worker that is killed when its fourth batch comes (a module
    function: the pool sends functions by name)."""
    _batches_here.append(offset)
    if len(_batches_here) >= 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return _run_batch(offset, length)


class _RefusingPool(concurrent.futures.ProcessPoolExecutor):
    """A pool that already knows a worker died when the sixth batch is handed over (the case
    where the main process learns it from ``submit``, not from a batch's result)."""

    def submit(self, fn, /, *args, **kwargs):
        self.handed = getattr(self, "handed", 0) + 1
        if self.handed >= 6:
            raise BrokenProcessPool("A child process terminated abruptly")
        return super().submit(fn, *args, **kwargs)


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
@pytest.mark.parametrize("how", ["killed", "refused"])
def test_a_worker_that_dies_leaves_the_rest_to_this_process(how, tmp_path, monkeypatch, caplog):
    """A worker killed mid-run (the out-of-memory killer, an operator): the conversion goes on
    in this process from the first batch not yet taken, and gives the same file."""
    source = tmp_path / "in.json"
    _tricky_export("text-ner", source)
    cfg = converters.parse_label_config(EXPORTS / "text-ner" / "label_config.xml")
    _convert_file(source, "CONLL2003", cfg, tmp_path / "one", 0)
    if how == "killed":
        monkeypatch.setattr(parallel, "_run_batch", _dies_at_its_fourth_batch)
    else:
        monkeypatch.setattr(parallel, "ProcessPoolExecutor", _RefusingPool)
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 3000)
    restarts: list[int] = []
    iter_from = parallel.ArrayFile.iter_from
    monkeypatch.setattr(parallel.ArrayFile, "iter_from", lambda self, offset: restarts.append(offset)
                        or iter_from(self, offset))
    with caplog.at_level("WARNING", logger="converters"):
        _convert_file(source, "CONLL2003", cfg, tmp_path / "two", 2)
    assert restarts and "a converter worker process died" in caplog.text
    assert (tmp_path / "one" / "result.conll").read_bytes() == (tmp_path / "two" / "result.conll").read_bytes()


@needs_fixtures
@pytest.mark.parametrize("data_first", [False, True], ids=["id-first", "data-first"])
def test_batches_are_cut_the_same_reading_only_where_they_end(data_first, tmp_path, monkeypatch):
    """With Label Studio's task start, the cutter reads only the bytes where a batch ends; the
    cuts are the ones it makes reading the whole file, whatever its read size."""
    source = tmp_path / "in.json"
    _tricky_export("image-bbox", source, data_first)

    def cuts(chunk: int) -> list[tuple]:
        with open(source, "rb") as f:
            return [c[:2] + (c[2] if c[0] == "batch" else None,)
                    for c in jsonstream.iter_array_batches(f, 3000, chunk)]

    ahead = {chunk: cuts(chunk) for chunk in (4096, 1 << 22)}
    monkeypatch.setattr(jsonstream, "_AHEAD", 8)  # never enough to find a task start
    whole = {chunk: cuts(chunk) for chunk in (4096, 1 << 22)}
    assert ahead == whole
    assert sum(1 for c in whole[4096] if c[0] == "batch") > 20


def _region_part(item: items.Item) -> tuple:
    """What the formats built from regions alone read of an item (see ``items.RegionTask``)."""
    return item.id, item.input, item.output, item.annotation_id, item.created_at, item.was_cancelled


@needs_fixtures
@pytest.mark.parametrize("schema", ["ItemTask", "RegionTask"])
def test_field_decoding_keeps_only_what_items_read_and_refuses_what_does_not_fit(schema):
    pytest.importorskip("msgspec")
    from converters import csv_export

    config = converters.parse_label_config(EXPORTS / "image-bbox" / "label_config.xml")
    job = csv_export.CsvJob(config) if schema == "ItemTask" else coco.CocoJob(config)
    assert job.fields is getattr(items, schema)
    runner = parallel.BatchRunner(job, EXPORTS / "image-bbox" / "JSON.json", main=False)
    try:
        tasks = json.loads((EXPORTS / "image-bbox" / "JSON.json").read_text(encoding="utf-8"))
        decoded = runner.decode_fields(json.dumps(tasks, ensure_ascii=False).encode())
        assert [t["id"] for t in decoded] == [t["id"] for t in tasks]
        assert all("predictions" not in t and "data" in t for t in decoded)
        assert any(t["annotations"] for t in decoded)
        # the items (what every per-task format is built from) are the same, in what the format reads
        for full, part in zip(tasks, decoded, strict=True):
            if schema == "ItemTask":
                assert items.task_items(part, config, True) == items.task_items(full, config, True)
            else:
                assert ([_region_part(i) for i in items.task_items(part, config)]
                        == [_region_part(i) for i in items.task_items(full, config)])
        assert runner.decode_fields(b'[{"id":1,"annotations":[],"data":{"x":NaN}}]') is None
        assert runner.decode_fields(b'[{"id":1,"annotations":[{"result":[5]}],"data":{}}]') is None
    finally:
        runner.close()


def test_no_workers_for_small_files_or_plain_iterables(tmp_path):
    path = tmp_path / "in.json"
    path.write_text("[]", encoding="utf-8")
    options = converters.ConvertOptions()
    assert parallel.worker_count(parallel.ArrayFile(path), options) == 0  # below MIN_PARALLEL_BYTES
    assert parallel.worker_count([{"id": 1}], converters.ConvertOptions(workers=2)) == 0
    assert parallel.worker_count(parallel.ArrayFile(path), converters.ConvertOptions(workers=1)) == 0


# ------------------------------------------------------------------------------ image headers

@pytest.mark.parametrize("fmt,mode", [
    ("PNG", "1"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "I;16"),
    ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("GIF", "P"), ("BMP", "RGB"), ("BMP", "L"),
    ("WEBP", "RGB"), ("WEBP", "RGBA"),
])
def test_image_size_equals_pillow(fmt, mode):
    Image = pytest.importorskip("PIL.Image")
    if fmt == "WEBP" and not pytest.importorskip("PIL.features").check("webp"):
        pytest.skip("Pillow without WebP")
    buf = io.BytesIO()
    Image.new(mode, (37, 23)).save(buf, fmt)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        expected = (*img.size, len(img.getbands()))
    assert images.image_size(data[:65536]) == expected


@needs_fixtures
def test_image_size_of_the_fixture_images():
    sizes = {p.name: images.image_size(p.read_bytes())
             for p in (EXPORTS / "image-bbox" / "COCO_WITH_IMAGES" / "images").iterdir()}
    assert sizes["50edc874-street_003.png"] == (72, 54, 1)  # grayscale: VOC depth 1 in Label Studio's export
    assert sizes["a8fc4487-street_002.jpg"] == (100, 75, 3)
    assert images.image_size(b"not an image") is None


# ------------------------------------------------------------------------------ CSV cells

@pytest.mark.parametrize("sep", [",", "\t"])
def test_csv_cells_equal_the_csv_module(sep):
    import csv
    from decimal import Decimal

    from converters.csv_export import _cell

    values = ["", "a", 'say "hi"', '"', "a,b", "a\tb", "x\ny\r\n", "é😀", "\x00", None, 0, -3, 10**30, 1.5, 1e-05,
              float("nan"), float("-inf"), True, False, Decimal("1.10"), ("t",)]
    rnd = random.Random(1)
    for _ in range(500):
        row = [rnd.choice(values) for _ in range(rnd.randint(1, 6))]
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, delimiter=sep).writerow(row)
        assert sep.join(map(_cell, row)) + "\r\n" == buf.getvalue(), row


def test_voc_escape_is_saxutils_escape():
    from xml.sax.saxutils import escape

    from converters import voc

    for text in ['a & b < c > d "e" \'f\'', "&amp;", "<>&\"", "plain", ""]:
        assert voc._escape(text) == escape(text, {'"': "&quot;"})


@needs_fixtures
@pytest.mark.parametrize("restarts", [0, 1])
def test_csv_lines_written_ahead_or_at_the_end_are_the_same(restarts, tmp_path, monkeypatch):
    """CSV lines are written while converting, for the columns seen so far, and again when a new
    column shows up; after too many new columns they are all written at the end."""
    from converters import csv_export

    source = tmp_path / "in.json"
    _tricky_export("image-bbox", source)
    cfg = converters.parse_label_config(EXPORTS / "image-bbox" / "label_config.xml")
    _convert_file(source, "CSV", cfg, tmp_path / "ahead", 0)
    monkeypatch.setattr(csv_export, "_MAX_RESTARTS", restarts)
    _convert_file(source, "CSV", cfg, tmp_path / "end", 0)
    assert _outputs(tmp_path / "ahead") == _outputs(tmp_path / "end")


_TEXT_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="A"/>'
                '</Choices></View>')
_TEXT_TASK = {"id": 1, "data": {"text": "x"}, "annotations": [
    {"id": 1, "completed_by": 1, "result": [{"from_name": "c", "to_name": "text", "type": "choices",
                                             "value": {"choices": ["A"]}}]}]}
_BOX_CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
               '<Label value="Car"/></RectangleLabels></View>')
_BOX_TASK = {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [
    {"id": 1, "completed_by": 1, "result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                                             "original_width": 10, "original_height": 10,
                                             "value": {"x": 1, "y": 1, "width": 5, "height": 5,
                                                       "rectanglelabels": ["Car"]}}]}]}


_NER_CONFIG = ('<View><Text name="text" value="$text"/><Labels name="ner" toName="text"><Label value="PER"/>'
               '</Labels></View>')
_NER_TASK = {"id": 1, "data": {"text": "Ann met Bob."}, "annotations": [
    {"id": 1, "completed_by": 1, "result": [{"from_name": "ner", "to_name": "text", "type": "labels",
                                             "value": {"start": 0, "end": 3, "labels": ["PER"]}}]}]}


@pytest.mark.parametrize("fmt,name,config,task", [("CSV", "result.csv", _TEXT_CONFIG, _TEXT_TASK),
                                                  ("TSV", "result.tsv", _TEXT_CONFIG, _TEXT_TASK),
                                                  ("JSON", "result.json", _TEXT_CONFIG, _TEXT_TASK),
                                                  ("JSON_MIN", "result.json", _TEXT_CONFIG, _TEXT_TASK),
                                                  ("CONLL2003", "result.conll", _NER_CONFIG, _NER_TASK),
                                                  ("COCO", "result.json", _BOX_CONFIG, _BOX_TASK)])
def test_result_file_appears_complete_with_the_usual_permissions(fmt, name, config, task, tmp_path):
    """The result file is written under a temporary name and renamed when complete: a reader
    sees no half-written file, a failed conversion leaves no file behind, and the file gets the
    same permissions as any other file the process creates (not a temporary file's 0600)."""
    cfg = converters.parse_label_config(config)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "reference").write_bytes(b"")
    converters.get(fmt).convert(iter([task]), cfg, out, converters.ConvertOptions())
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [name]
    assert (out / name).stat().st_mode & 0o777 == (tmp_path / "reference").stat().st_mode & 0o777

    def failing():
        yield task
        raise RuntimeError("source went away")

    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(RuntimeError):
        converters.get(fmt).convert(failing(), cfg, again, converters.ConvertOptions())
    assert [p.name for p in again.iterdir() if p.is_file()] == []


# ------------------------------------------------------------------------------ JSON by batches

_json_module = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _convert_json(source: Path, out: Path, workers: int, shape=None) -> tuple[bytes, list]:
    warnings: list[tuple[object, str]] = []
    options = converters.ConvertOptions(warn=lambda task_id, message: warnings.append((task_id, message)),
                                        workers=workers, task_shape=shape)
    converters.get("JSON").convert(inputs.iter_input_tasks(source), None, out, options, check=False)
    return (out / "result.json").read_bytes(), warnings


def _storage_tasks(slug: str) -> list[dict]:
    """syncd's storage documents of a fixture project: users expanded, prediction objects."""
    docs = []
    for path in sorted((EXPORTS.parent / "storage-export" / slug / "after-sync").glob("*.json"),
                       key=lambda p: int(p.stem)):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["predictions"] = [{"id": pid, "result": [], "score": 0.5} for pid in doc["predictions"]]
        docs.append(doc)
    return docs


def _json_batch(text: str | bytes) -> memoryview:
    return memoryview(text.encode("utf-8") if isinstance(text, str) else text)


@pytest.mark.parametrize("decoder", ["msgspec", "json-module"])
def test_json_batch_comes_out_as_it_is_when_no_task_needs_the_shape(decoder, monkeypatch):
    from syncd.document import label_studio_export

    if decoder == "msgspec":
        pytest.importorskip("msgspec")
    else:
        monkeypatch.setattr(json_export, "_msgspec", None)
        monkeypatch.setattr(json_export, "_decode", jsonstream.strict_loads)
        monkeypatch.setattr(json_export, "_DECODE_ERRORS", (ValueError,))
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.png", "text": "é \"q\" \\ / \\/ \n\x01\x7f\u2028"},
              "annotations": [{"result": [{"value": {"x": 28.333333333333332, "y": 0.0001, "r": -0.0}}],
                               "completed_by": 1}],
              "predictions": [7], "n": [2**63 - 1, -(2**63), None, True]}, {"id": 2, "data": {}, "annotations": []}]
    own = _json_module(tasks)
    label_studio = own.replace("/", "\\/")
    compact_ascii = json.dumps(tasks, separators=(",", ":"))  # \u00e9 for é
    for shape in (None, label_studio_export):
        job = json_export.JsonJob(shape)
        # however it is written (the json module's way, Label Studio's, with white space, with
        # numbers, escapes and keys of its own): copied from the input as it is
        for same in (own, label_studio, compact_ascii, own.replace('{"id":2,', '{"id":2,"id":2,'),
                     label_studio.replace("28.333333333333332", "2.8333333333333332e1"),
                     '[{"v":1e-5,"w":18446744073709551616}]', json.dumps(tasks), json.dumps(tasks, indent=2),
                     "[\n" + label_studio[1:-1] + " ]"):
            for main in (False, True):
                assert job.whole_batch(_json_batch(same), 10, 99, main) == json_export.Span(None, 10, 99), same
        # NaN, a list of tasks, a number, not UTF-8, invalid JSON: one task at a time (the usual way warns)
        for batch in ('[{"v":NaN}]', '[[{"id":1}]]', '[{"id":1},5]', b'[{"s":"\xff"}]', '[{"s":"\\x"}]'):
            assert job.whole_batch(_json_batch(batch), 0, 1, True) is None, batch


def test_json_batch_applies_the_task_shape():
    from syncd.document import label_studio_export

    tasks = _storage_tasks("image-bbox")
    text = _json_module(tasks)
    expected = _json_module([label_studio_export(t) for t in tasks])
    assert expected != text  # the documents need the shape
    job = json_export.JsonJob(label_studio_export)
    assert job.whole_batch(_json_batch(text), 0, 1, True) == expected[1:-1].encode()
    # Label Studio's own tasks need none: copied
    export = _label_studio_style(expected)
    assert job.whole_batch(_json_batch(export), 0, 1, True) == json_export.Span(None, 0, 1)


def _label_studio_style(text: str) -> str:
    return text.replace("/", "\\/")  # Label Studio's export escapes every "/"


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
@pytest.mark.parametrize("style", ["json-module", "label-studio", "storage", "tricky"])
def test_json_workers_write_the_bytes_of_one_process(style, tmp_path, monkeypatch):
    """Worker processes (copying the batches that need no change, encoding the others with
    orjson or task by task) write what one process writes, with the same warnings, with and
    without the task shape; what is copied and what is encoded again is as documented."""
    from syncd.document import label_studio_export

    source = tmp_path / "in.json"
    if style == "tricky":
        _tricky_export("image-bbox", source)
    else:
        tasks = []
        for i in range(40):
            for task in _storage_tasks("image-bbox") if style == "storage" else load_tasks("image-bbox"):
                task = copy.deepcopy(task)
                task["id"] = len(tasks) + 1
                if i == 5:
                    task["data"]["small"] = 1e-05  # written with an exponent: not by orjson
                if i == 9:
                    task["data"]["huge"] = 2**64
                tasks.append(task)
        text = _json_module(tasks)
        source.write_text(_label_studio_style(text) if style == "label-studio" else text, encoding="utf-8")
    copies: list[int] = []  # bytes copied from the input file
    copy_range = json_export._copy_range
    source_inode = source.stat().st_ino

    def spy(src: int, dst: int, offset: int, length: int) -> None:
        if os.fstat(src).st_ino == source_inode:
            copies.append(length)
        copy_range(src, dst, offset, length)

    monkeypatch.setattr(json_export, "_copy_range", spy)
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 20000)  # many batches
    for shape in (None, label_studio_export):
        copies.clear()
        one = _convert_json(source, tmp_path / "one", 0, shape)
        copied_by_one = list(copies)
        copies.clear()
        two = _convert_json(source, tmp_path / "two", 2, shape)
        assert two == one and one[0].startswith(b"[{")
        assert copies == copied_by_one  # the same batches
        assert os.listdir(tmp_path / "two") == ["result.json"]  # the workers' part files are removed
        # batches needing no shape are copied
        needs_shape = style == "storage" and shape is not None
        assert bool(copies) == (not needs_shape)
        if style == "tricky":  # (its malformed tasks are left out, with warnings: the same ones)
            # written with spaces: batches copied as they are, between them a ","
            assert b"}, {" in one[0] and b"},{" in one[0]
            # the tasks of a conversion that never sees the file (one task at a time), no more
            tasks_given = list(inputs.iter_input_tasks(source))
            given_warnings: list = []
            options = converters.ConvertOptions(warn=lambda *w, sink=given_warnings: sink.append(w), task_shape=shape)
            converters.get("JSON").convert(tasks_given, None, tmp_path / "given", options, check=False)
            assert json.loads(one[0]) == json.loads((tmp_path / "given" / "result.json").read_bytes())
            assert given_warnings == one[1]
            continue
        if needs_shape:
            assert one[0] == _json_module([shape(t) for t in tasks]).encode("utf-8")
        else:
            # (all of it: the "," between batches and the brackets are written)
            assert one[0] == source.read_bytes() and sum(copies) + len(copies) - 1 == len(one[0]) - 2


@needs_fixtures
@pytest.mark.skipif(not HAVE_ORJSON or not parallel._can_fork(), reason="workers need orjson and fork")
@pytest.mark.parametrize("slug", PROJECTS)
def test_json_of_the_fixture_exports_is_the_same_with_workers(slug, tmp_path, monkeypatch):
    from syncd.document import label_studio_export

    monkeypatch.setattr(parallel, "_BATCH_BYTES", 2000)
    source = EXPORTS / slug / "JSON.json"
    one = _convert_json(source, tmp_path / "one", 0, label_studio_export)
    two = _convert_json(source, tmp_path / "two", 2, label_studio_export)
    assert one == two
    assert json.loads(two[0]) == load_tasks(slug)
