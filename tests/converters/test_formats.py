"""The converters against Label Studio 1.23.2's own exports (the fixture set is the oracle)."""

from __future__ import annotations

import json
import posixpath
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import converters
from converters import ConvertOptions, FormatNotApplicable, parse_label_config
from tests.converters_helpers import (
    EXPORTS,
    FIXTURES,
    PROJECTS,
    csv_rows,
    files_under,
    load_tasks,
    needs_fixtures,
    read_png_gray8,
    xml_tree,
)
from tests.converters_helpers import run as run_cli

pytestmark = needs_fixtures


def config(slug: str):
    return parse_label_config(EXPORTS / slug / "label_config.xml")


def run(slug: str, fmt: str, out: Path, tasks=None, **options) -> Path:
    warnings: list[tuple[object, str]] = []
    opts = ConvertOptions(warn=lambda tid, msg: warnings.append((tid, msg)), **options)
    tasks = load_tasks(slug) if tasks is None else tasks
    converters.get(fmt).convert(iter(tasks), config(slug), out, opts)
    assert not warnings, warnings
    return out


def offered(slug: str) -> dict[str, bool]:
    formats = json.loads((EXPORTS / slug / "formats.json").read_text(encoding="utf-8"))
    return {f["name"]: not f.get("disabled", False) for f in formats}


# --------------------------------------------------------------------------- config and registry


@pytest.mark.parametrize("slug", PROJECTS)
def test_applicable_formats_are_the_ones_label_studio_offers(slug):
    ls = offered(slug)
    ours = converters.applicable(config(slug))
    assert set(ours) == set(converters.names())
    for name, reason in ours.items():
        assert (reason is None) == ls[name], (name, reason)


def test_not_applicable_format_raises_one_clear_line(tmp_path):
    with pytest.raises(FormatNotApplicable) as err:
        converters.get("YOLO").convert([], config("text-classification"), tmp_path)
    message = str(err.value)
    assert message == (
        "YOLO needs RectangleLabels, PolygonLabels or KeyPointLabels on an Image; "
        "this config has Choices, TextArea"
    )
    assert "\n" not in message


def test_unknown_format():
    with pytest.raises(converters.UnknownFormat, match="unknown format 'PDF'"):
        converters.get("PDF")
    assert converters.get("yolo-obb").name == "YOLO_OBB"


def test_every_format_has_a_description():
    assert converters.names() == [
        "JSON", "JSON_MIN", "CSV", "TSV", "CONLL2003", "COCO", "VOC",
        "BRUSH_TO_NUMPY", "BRUSH_TO_PNG", "ASR_MANIFEST", "YOLO", "YOLO_OBB",
    ]
    for name in converters.names():
        assert converters.get(name).description


def test_label_config_parser():
    cfg = parse_label_config(
        """<View><Image name="img" value="$image"/>
        <RectangleLabels name="box" toName="img"><Label value="Zebra" category="7"/><Label value="Ant"/>
        <Label value="Cat" alias="cat"/></RectangleLabels>
        <View><Choices name="q" toName="img"><View><Choice value="yes"/></View></Choices></View>
        <Filter name="f" toName="box"/></View>"""
    )
    assert list(cfg.controls) == ["box", "q"]
    box = cfg.controls["box"]
    assert box.type == "RectangleLabels" and box.to_names == ["img"]
    assert box.labels == ["Zebra", "Ant", "cat"]
    assert box.label_attrs["Zebra"]["category"] == "7"
    assert cfg.controls["q"].labels == ["yes"]
    assert cfg.objects["img"].value == "image" and cfg.data_keys == ["image"]
    assert cfg.match_control("box") == "box" and cfg.match_control("nope") is None
    from converters.categories import label_categories

    cats, ids = label_categories(cfg)
    assert cats == [{"id": 7, "name": "Zebra"}, {"id": 0, "name": "Ant"}, {"id": 1, "name": "cat"},
                    {"id": 2, "name": "yes"}]


def test_label_config_repeater_names():
    cfg = parse_label_config(
        """<View><Repeater on="$pages" indexFlag="{{idx}}"><Image name="page_{{idx}}" value="$pages[{{idx}}].url"/>
        <Choices name="c_{{idx}}" toName="page_{{idx}}"><Choice value="a"/></Choices></Repeater></View>"""
    )
    assert cfg.match_control("c_3") == "c_{{idx}}"


def test_invalid_label_config():
    with pytest.raises(converters.LabelConfigError):
        parse_label_config("<View><Image name='a'")


# --------------------------------------------------------------------------- JSON family


@pytest.mark.parametrize("slug", PROJECTS)
def test_json_equals_label_studio(slug, tmp_path):
    run(slug, "JSON", tmp_path)
    ours = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert ours == load_tasks(slug)


@pytest.mark.parametrize("slug", ["image-bbox", "text-ner", "image-brush"])
def test_json_from_syncd_documents_equals_label_studio(slug, tmp_path):
    """``syncd convert`` of storage documents (expanded completed_by, prediction objects) to JSON
    gives Label Studio's JSON export."""
    exported = {t["id"]: t for t in load_tasks(slug)}
    (tmp_path / "in").mkdir()
    for path in sorted((FIXTURES / "storage-export" / slug / "after-sync").glob("*.json"), key=lambda p: int(p.stem)):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(doc["annotations"][0]["completed_by"], dict)
        doc["predictions"] = [{"id": pid, "result": [], "score": 0.5} for pid in doc["predictions"]]
        (tmp_path / "in" / path.name).write_text(json.dumps(doc), encoding="utf-8")
    assert run_cli(["convert", str(tmp_path / "in"), "--format", "JSON", "--out", str(tmp_path / "out")]) == 0
    ours = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert ours
    for task in ours:
        expected = dict(exported[task["id"]])
        # drafts: Label Studio's storage files hold draft ids where the export has draft objects
        task.pop("drafts"), expected.pop("drafts")
        assert task == expected


@pytest.mark.parametrize("slug", PROJECTS)
def test_json_min_equals_label_studio(slug, tmp_path):
    run(slug, "JSON_MIN", tmp_path)
    ours = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert ours == json.loads((EXPORTS / slug / "JSON_MIN.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("slug", PROJECTS)
@pytest.mark.parametrize("fmt,sep,name", [("CSV", ",", "result.csv"), ("TSV", "\t", "result.tsv")])
def test_csv_and_tsv_equal_label_studio(slug, fmt, sep, name, tmp_path):
    run(slug, fmt, tmp_path)
    theirs = EXPORTS / slug / f"{fmt}.csv"
    ours_rows = csv_rows(tmp_path / name, sep)
    their_rows = csv_rows(theirs, sep)
    assert ours_rows[0] == their_rows[0]  # header
    assert ours_rows[1:] == their_rows[1:]
    assert (tmp_path / name).read_bytes().count(b"\r\n") == theirs.read_bytes().count(b"\r\n")


def test_csv_renames_data_keys_that_collide_with_controls(tmp_path):
    cfg = parse_label_config('<View><Text name="t" value="$text"/><Choices name="text" toName="t">'
                             '<Choice value="A"/></Choices></View>')
    task = {"id": 1, "data": {"text": "hi"}, "annotations": [{
        "id": 5, "completed_by": 1, "created_at": "x",
        "result": [{"from_name": "text", "to_name": "t", "type": "choices", "value": {"choices": ["A"]}}]}]}
    converters.get("CSV").convert([task], cfg, tmp_path)
    header, row = csv_rows(tmp_path / "result.csv", ",")
    assert header == ["_data_text", "annotation_id", "annotator", "created_at", "id", "lead_time", "text",
                      "updated_at"]
    assert row == ["hi", "5", "1", "x", "1", "", "A", ""]


# --------------------------------------------------------------------------- CONLL2003


def test_conll2003_equals_label_studio(tmp_path):
    run("text-ner", "CONLL2003", tmp_path)
    ours = (tmp_path / "result.conll").read_text(encoding="utf-8").splitlines()
    theirs = (EXPORTS / "text-ner" / "CONLL2003.conll").read_text(encoding="utf-8").splitlines()
    assert ours == theirs


TRICKY_TEXTS = [
    'He said "hello" and \'bye\'... ok?! (really) [x] {y} <z>',
    "I can't, won't & don't -- cannot gimme 'tis 3,000.50 $5 @home #tag 50% a/b c:d",
    "''Quoted'' ``text`` end.",
    "Ends with period.",
    "Mr. O'Neil's dog's bone. ",
    "tab\tand\nnewline  double  spaces.",
]


def test_treebank_spans_equal_nltk_with_label_studio_punctuation(monkeypatch):
    treebank = pytest.importorskip("nltk.tokenize.treebank")
    import re

    from converters.treebank import span_tokenize

    # exactly the patch label_studio_sdk.converter.utils applies
    monkeypatch.setattr(treebank.TreebankWordTokenizer, "PUNCTUATION", [
        (re.compile(r"([:,])([^\d])"), r" \1 \2"),
        (re.compile(r"([:,])$"), r" \1 "),
        (re.compile(r"\.\.\."), r" ... "),
        (re.compile(r"[;@#$/%&]"), r" \g<0> "),
        (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
        (re.compile(r"[?!]"), r" \g<0> "),
        (re.compile(r"([^'])' "), r"\1 ' "),
    ])
    texts = TRICKY_TEXTS + [t["data"]["text"] for t in load_tasks("text-ner")]
    for text in texts:
        assert span_tokenize(text) == list(treebank.TreebankWordTokenizer().span_tokenize(text)), text


# --------------------------------------------------------------------------- YOLO


@pytest.mark.parametrize(
    "slug,fmt",
    [("image-bbox", "YOLO"), ("image-bbox", "YOLO_OBB"), ("image-polygon", "YOLO"),
     ("image-polygon", "YOLO_OBB"), ("image-keypoints", "YOLO_OBB")],
)
def test_yolo_equals_label_studio(slug, fmt, tmp_path):
    run(slug, fmt, tmp_path)
    theirs = EXPORTS / slug / fmt
    assert files_under(tmp_path) == files_under(theirs)
    assert (tmp_path / "images").is_dir()  # Label Studio's zip has an empty images/ folder too
    for rel in sorted(files_under(theirs)):
        if rel == "notes.json":
            continue
        ours_lines = (tmp_path / rel).read_text(encoding="utf-8").splitlines()
        assert ours_lines == (theirs / rel).read_text(encoding="utf-8").splitlines(), rel
    ours_notes = json.loads((tmp_path / "notes.json").read_text())
    their_notes = json.loads((theirs / "notes.json").read_text())
    assert ours_notes["categories"] == their_notes["categories"]
    assert set(ours_notes["info"]) == set(their_notes["info"])
    assert ours_notes["info"]["version"] == "1.0"


# --------------------------------------------------------------------------- COCO


def _items_per_task(slug: str) -> list[tuple[int, bool]]:
    """(task id, has annotations) for every item Label Studio makes, in order."""
    out = []
    for task in load_tasks(slug):
        anns = task["annotations"]
        kept = [a for a in anns if not a["was_cancelled"]]
        if not anns:
            out.append((task["id"], False))
        out += [(task["id"], True)] * len(kept)
    return out


@pytest.mark.parametrize("slug", ["image-bbox", "image-polygon"])
def test_coco_equals_label_studio(slug, tmp_path):
    run(slug, "COCO", tmp_path)
    assert files_under(tmp_path) == {"result.json"} and (tmp_path / "images").is_dir()
    ours = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    theirs = json.loads((EXPORTS / slug / "COCO" / "result.json").read_text(encoding="utf-8"))
    assert list(ours) == list(theirs)
    assert ours["categories"] == theirs["categories"]
    assert ours["annotations"] == theirs["annotations"]
    assert set(ours["info"]) == set(theirs["info"])
    assert {k: ours["info"][k] for k in ("version", "description", "contributor", "url")} == {
        k: theirs["info"][k] for k in ("version", "description", "contributor", "url")}

    items = _items_per_task(slug)
    assert len(ours["images"]) == len(theirs["images"]) == len(items)
    for mine, ls, (task_id, annotated) in zip(ours["images"], theirs["images"], items, strict=True):
        assert mine["id"] == ls["id"]
        # Deliberate difference 1: file_name of media on the Label Studio server
        name = ls["file_name"]
        if name.startswith(("images/", "s3://")):
            assert mine["file_name"] == name
        else:
            assert mine["file_name"] == "images/" + posixpath.basename(name)
        # Deliberate difference 2: size of never-annotated images is unknown without the file
        if annotated:
            assert (mine["width"], mine["height"]) == (ls["width"], ls["height"]), task_id
        else:
            assert (mine["width"], mine["height"]) == (None, None), task_id


def test_coco_keeps_an_image_whose_annotation_has_no_usable_region(tmp_path):
    """Label Studio drops such an image (it only adds it on the first sized region); we keep it."""
    cfg = config("image-bbox")
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/2/a.png"}, "annotations": [{
            "id": 1, "completed_by": 1, "created_at": "2026",
            "result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                        "value": {"x": 1, "y": 1, "width": 1, "height": 1, "rectanglelabels": ["Car"]}}]}]},
        {"id": 2, "data": {"image": "/data/upload/2/b.png"}, "annotations": [{
            "id": 2, "completed_by": 1, "created_at": "2026",
            "result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                        "original_width": 10, "original_height": 20,
                        "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["Car"]}}]}]},
    ]
    converters.get("COCO").convert(tasks, cfg, tmp_path)
    coco = json.loads((tmp_path / "result.json").read_text())
    assert coco["images"] == [
        {"width": None, "height": None, "id": 0, "file_name": "images/a.png"},
        {"width": 10, "height": 20, "id": 1, "file_name": "images/b.png"},
    ]
    assert [(a["id"], a["image_id"], a["bbox"]) for a in coco["annotations"]] == [(0, 1, [1.0, 2.0, 5.0, 10.0])]


def test_coco_file_name_rule():
    from converters.coco import image_file_name

    assert image_file_name("/data/upload/2/62f8e6ba-street_000.png") == "images/62f8e6ba-street_000.png"
    assert image_file_name("s3://b/cam 3/f.jpg") == "s3://b/cam 3/f.jpg"
    assert image_file_name("https://images.example.com/street/Straße%20Nr.12.jpg") == (
        "images/29bdccad__Straße%20Nr.12.jpg")
    assert image_file_name("/data/local-files/?d=dir/sub/1.jpg") == "images/1.jpg"


def test_coco_with_key_points(tmp_path):
    cfg = parse_label_config(
        '<View><Image name="img" value="$image"/><RectangleLabels name="box" toName="img">'
        '<Label value="face"/></RectangleLabels><KeyPointLabels name="kp" toName="img">'
        '<Label value="nose" model_index="1"/><Label value="eye" model_index="0"/></KeyPointLabels></View>'
    )
    assert converters.get("COCO").applies_to(cfg) is None
    task = {"id": 3, "data": {"image": "/data/upload/1/f.png"}, "annotations": [{
        "id": 9, "completed_by": 1, "created_at": "t", "result": [
            {"id": "r", "from_name": "box", "to_name": "img", "type": "rectanglelabels", "original_width": 100,
             "original_height": 50, "value": {"x": 10, "y": 10, "width": 20, "height": 20,
                                               "rectanglelabels": ["face"]}},
            {"id": "k", "parentID": "r", "from_name": "kp", "to_name": "img", "type": "keypointlabels",
             "original_width": 100, "original_height": 50, "value": {"x": 15, "y": 20, "keypointlabels": ["nose"]}},
        ]}]}
    # expected values: output of label-studio-sdk 2.1.2's Converter for this task and config
    converters.get("COCO").convert([task], cfg, tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "face"},
        {"id": 2, "name": "default", "supercategory": "default", "keypoints": ["nose", "eye"], "skeleton": []},
    ]
    assert coco["annotations"] == [
        {"id": 0, "image_id": 0, "category_id": 1, "segmentation": [], "bbox": [10.0, 5.0, 20.0, 10.0],
         "ignore": 0, "iscrowd": 0, "area": 200.0},
        {"id": 1, "image_id": 0, "category_id": 2, "keypoints": [0, 0, 0, 15, 10, 2], "num_keypoints": 1,
         "bbox": [15, 10, 0, 0], "iscrowd": 0},
    ]
    converters.get("YOLO").convert([task], cfg, tmp_path / "yolo")
    assert (tmp_path / "yolo" / "labels" / "f.txt").read_text() == "0 0.2 0.2 0.2 0.2 0.0 0.0 0 0.15 0.2 2"
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "face\n"


# --------------------------------------------------------------------------- VOC


def test_voc_equals_label_studio(tmp_path):
    run("image-bbox", "VOC", tmp_path)
    theirs = EXPORTS / "image-bbox" / "VOC"
    assert files_under(tmp_path / "Annotations") == files_under(theirs / "Annotations")
    # Deliberate difference: images are not downloaded, so images/ stays empty.
    assert (tmp_path / "images").is_dir() and not any((tmp_path / "images").iterdir())
    for rel in sorted(files_under(theirs / "Annotations")):
        ours, ls = xml_tree(tmp_path / "Annotations" / rel), xml_tree(theirs / "Annotations" / rel)
        if rel == "50edc874-street_003.xml":
            # Deliberate difference: grayscale image; Label Studio reads depth 1 from the file.
            depth_ls = ET.parse(theirs / "Annotations" / rel).findtext("size/depth")
            depth_ours = ET.parse(tmp_path / "Annotations" / rel).findtext("size/depth")
            assert (depth_ls, depth_ours) == ("1", "3")
            ls = _replace_depth(ls, "3")
        assert ours == ls, rel


def _replace_depth(tree: tuple, depth: str) -> tuple:
    tag, text, children = tree
    if tag == "depth":
        return (tag, depth, children)
    return (tag, text, tuple(_replace_depth(c, depth) for c in children))


# --------------------------------------------------------------------------- brush


def test_brush_to_numpy_equals_label_studio(tmp_path):
    np = pytest.importorskip("numpy")
    run("image-brush", "BRUSH_TO_NUMPY", tmp_path)
    theirs = EXPORTS / "image-brush" / "BRUSH_TO_NUMPY"
    assert files_under(tmp_path) == files_under(theirs)
    for rel in files_under(theirs):
        a, b = np.load(tmp_path / rel), np.load(theirs / rel)
        assert a.dtype == b.dtype and a.shape == b.shape == (48, 64)
        assert np.array_equal(a, b), rel


def test_brush_to_png_equals_label_studio(tmp_path):
    pytest.importorskip("numpy")
    run("image-brush", "BRUSH_TO_PNG", tmp_path)
    theirs = EXPORTS / "image-brush" / "BRUSH_TO_PNG"
    assert files_under(tmp_path) == files_under(theirs)
    for rel in files_under(theirs):
        assert read_png_gray8(tmp_path / rel) == read_png_gray8(theirs / rel), rel


# --------------------------------------------------------------------------- ASR manifest


def _fixture_audio(url: str) -> Path | None:
    """Media resolver backed by the audio files Label Studio put into its ASR_MANIFEST export."""
    if not url.startswith("/data/upload/"):
        return None
    path = EXPORTS / "audio-asr" / "ASR_MANIFEST" / "audio" / posixpath.basename(url)
    return path if path.exists() else None


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_asr_manifest_equals_label_studio(tmp_path):
    warnings = []
    opts = ConvertOptions(media_resolver=_fixture_audio, warn=lambda tid, msg: warnings.append(tid))
    converters.get("ASR_MANIFEST").convert(load_tasks("audio-asr"), config("audio-asr"), tmp_path, opts)
    assert warnings == [36]  # external audio: not available, skipped like Label Studio does
    theirs = _manifest(EXPORTS / "audio-asr" / "ASR_MANIFEST" / "manifest.json")
    ours = _manifest(tmp_path / "manifest.json")
    # Deliberate difference: Label Studio's last line is task 35 (no annotation) carrying the
    # previous task's transcript and annotator ""; we do not export tasks without annotations.
    assert theirs[-1]["annotator"] == "" and theirs[-1]["text"] == theirs[-2]["text"]
    assert ours == theirs[:-1]
    for rel in files_under(tmp_path / "audio"):
        assert (tmp_path / "audio" / rel).read_bytes() == (EXPORTS / "audio-asr" / "ASR_MANIFEST" / "audio" / rel
                                                           ).read_bytes()


def test_asr_manifest_skips_task_without_annotation_even_when_first(tmp_path):
    tasks = load_tasks("audio-asr")
    unannotated = [t for t in tasks if not t["annotations"]]
    assert [t["id"] for t in unannotated] == [35]
    # Label Studio would raise UnboundLocalError here (no previous transcript to reuse).
    converters.get("ASR_MANIFEST").convert(unannotated + tasks, config("audio-asr"), tmp_path,
                                           ConvertOptions(warn=lambda *a: None))
    ours = _manifest(tmp_path / "manifest.json")
    assert "audio/2b1c4764-utt_street_04.wav" not in [r["audio_filepath"] for r in ours]
    # without a media resolver the duration is unknown, and external audio is kept
    assert all(r["duration"] is None for r in ours)
    assert [r["audio_filepath"] for r in ours][-1] == "audio/utt-external.wav"


def test_asr_manifest_skips_an_annotation_without_transcript(tmp_path):
    task = {"id": 7, "data": {"audio": "/data/upload/5/a.wav"},
            "annotations": [{"id": 1, "completed_by": 1, "result": []}]}
    warnings = []
    converters.get("ASR_MANIFEST").convert([task], config("audio-asr"), tmp_path,
                                           ConvertOptions(warn=lambda tid, msg: warnings.append((tid, msg))))
    assert (tmp_path / "manifest.json").read_text() == ""
    assert warnings == [(7, "annotation 1: no transcription in this annotation")]


# --------------------------------------------------------------------------- robustness, streaming


@pytest.mark.parametrize("fmt", ["JSON_MIN", "CSV", "COCO", "YOLO", "YOLO_OBB", "VOC"])
def test_malformed_task_and_result_are_skipped_with_a_warning(fmt, tmp_path):
    good = load_tasks("image-bbox")
    bad_result = {"id": 1001, "data": {"image": "/data/upload/2/zz.png"}, "annotations": [
        {"id": 5001, "completed_by": 1, "result": [{"from_name": "label", "value": None}]}]}
    bad_task = {"id": 1002, "annotations": "nope", "data": {}}
    warnings = []
    converters.get(fmt).convert(iter([bad_result, *good, bad_task, "junk"]), config("image-bbox"), tmp_path,
                                ConvertOptions(warn=lambda tid, msg: warnings.append(tid)))
    assert warnings == [1001, 1002, "?"]
    reference = tmp_path / "reference"
    converters.get(fmt).convert(iter(good), config("image-bbox"), reference)
    for rel in files_under(reference):
        assert (tmp_path / rel).read_bytes() == (reference / rel).read_bytes() or rel.endswith(
            ("result.json", "notes.json")), rel


def test_converters_consume_a_one_shot_iterator(tmp_path):
    for fmt in ("JSON", "CSV", "COCO"):
        out = tmp_path / fmt
        converters.get(fmt).convert((t for t in load_tasks("image-bbox")), config("image-bbox"), out)
    assert len(json.loads((tmp_path / "JSON" / "result.json").read_text())) == 11
    assert len(csv_rows(tmp_path / "CSV" / "result.csv", ",")) == 1 + 12
    assert len(json.loads((tmp_path / "COCO" / "result.json").read_text())["images"]) == 12


def test_empty_input(tmp_path):
    for fmt in ("JSON", "JSON_MIN", "COCO"):
        converters.get(fmt).convert([], config("image-bbox"), tmp_path / fmt)
        data = json.loads(next((tmp_path / fmt).glob("*.json")).read_text())
        assert data == [] or data["images"] == []


def test_coco_numbers_are_written_as_the_json_module_writes_them(tmp_path):
    """Box numbers are written without a JSON round trip: infinities and exponents must still be
    what Label Studio's json.dump gives."""
    config = parse_label_config(EXPORTS / "image-bbox" / "label_config.xml")
    result = {"from_name": "label", "to_name": "image", "type": "rectanglelabels",
              "original_width": 1e308, "original_height": 10,
              "value": {"x": 50, "y": 1e-5, "width": 1e-300, "height": 2, "rotation": 0, "rectanglelabels": ["Car"]}}
    task = {"id": 1, "data": {"image": "/data/upload/1/a%20b.jpg"}, "annotations": [{"id": 1, "result": [result]}]}
    converters.get("COCO").convert([task], config, tmp_path)
    text = (tmp_path / "result.json").read_text(encoding="utf-8")
    x, y, w, h = 50 * 1e308 / 100, 1e-5 * 10 / 100, 1e-300 * 1e308 / 100, 2 * 10 / 100
    assert f'"bbox":{json.dumps([x, y, w, h], separators=(",", ":"))}' in text  # Infinity, 1e-06, 1e-294
    assert f'"area":{json.dumps(w * h)}' in text
    assert json.loads(text)["images"][0]["file_name"] == "images/a%20b.jpg"


def test_csv_agreement_and_history_columns(tmp_path):
    import csv

    config = parse_label_config(EXPORTS / "text-classification" / "label_config.xml")
    tasks = json.loads((EXPORTS / "text-classification" / "JSON.json").read_text(encoding="utf-8"))
    task = next(t for t in tasks if t["annotations"])
    task["agreement"] = 87.5
    history = [{"action": "updated", "comment": "a/b"}]
    task["annotations"][0]["history"] = history
    other = next(t for t in tasks if t is not task and t["annotations"])
    converters.get("CSV").convert([task, other], config, tmp_path)
    with open(tmp_path / "result.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["agreement"] == "87.5"
    assert json.loads(rows[0]["history"].replace("\\/", "/")) == history
    assert rows[0]["annotator"] and rows[0]["lead_time"]  # the fixed columns are still in their places
    assert rows[-1]["agreement"] == "" and rows[-1]["history"] == ""  # other tasks: empty cells
