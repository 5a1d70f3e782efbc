#!/usr/bin/env python3
"""Generate a Label Studio 1.23.2 SQLite database holding N labeled tasks (benchmark data).

The schema (every table, index, trigger and view in ``sqlite_master``), the ``django_migrations`` rows and
the users/organization of a real Label Studio database (``--schema-from``, default: the repository's
``examples/label_studio.sqlite3``, identical to the Label Studio 1.23.2 fixture) are copied into a new file.
The fixture's projects, tasks, annotations, predictions, drafts, uploads and storages are *not* copied:
the generated database holds only new projects (ids 1..P) whose ``label_config`` is taken from the fixture
projects of the same kind (image-bbox, text-ner, text-classification, image-polygon) and N tasks spread
over them, each with at least one annotation row.

    python bench/gen_db.py OUT.sqlite3 --tasks 100000 [--projects 4] [--seed 1]
        [--annotations-per-task 1..2] [--predictions [FRACTION]] [--drafts FRACTION]

``generate()`` builds such a file, ``mutate()`` edits and deletes annotations of an existing one the way
Label Studio does (for incremental-sync benches).  Output is deterministic for a given seed and fixture.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sqlite3
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCHEMA = REPO / "examples" / "label_studio.sqlite3"

# Project kinds in the order projects are created (cycled when --projects > 4).
KINDS = ("bbox", "ner", "classification", "polygon")
KIND_OF_CONTROL = {
    "RectangleLabels": "bbox", "PolygonLabels": "polygon", "Labels": "ner", "Choices": "classification",
}

# Fixture tables whose rows are not copied (project content); every io_storages_* table is skipped as well.
PROJECT_TABLES = (
    "project", "projects_projectsummary", "data_import_fileupload",
    "task", "task_completion", "prediction", "tasks_annotationdraft",
)

EPOCH = datetime(1970, 1, 1)
SEC = 1_000_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
BASE_US = int((datetime(2025, 2, 3, 8, 30, 0) - EPOCH).total_seconds()) * SEC  # fallback only
IMPORT_SPAN_US = 120 * DAY

RID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NBSP = "\u00a0"


# --------------------------------------------------------------------------------------------- helpers
def ts(us: int) -> str:
    """Naive-UTC SQLite text timestamp as Django writes it: 'YYYY-MM-DD HH:MM:SS.ffffff'.

    Django drops the fraction when microseconds are 0; such values are avoided (bumped by 1 µs) so every
    generated timestamp has the 6-digit fraction.
    """
    if us % SEC == 0:
        us += 1
    return (EPOCH + timedelta(microseconds=us)).isoformat(" ")


def ts_api(us: int) -> str:
    """API/serializer form: 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (used inside annotation.prediction)."""
    if us % SEC == 0:
        us += 1
    return (EPOCH + timedelta(microseconds=us)).isoformat("T") + "Z"


def parse_ts(s: str) -> int:
    d = datetime.fromisoformat(s.replace("Z", "").replace("T", " ").split("+")[0])
    return int((d - EPOCH) / timedelta(microseconds=1))


def timesince(delta_us: int) -> str:
    """django.utils.timesince (depth 2, adjacent units): '0\\xa0minutes', '2\\xa0hours, 5\\xa0minutes'."""
    chunks = ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"), (86400, "day"),
              (3600, "hour"), (60, "minute"))
    s = max(0, delta_us // SEC)
    for i, (size, name) in enumerate(chunks):
        if s >= size:
            n = s // size
            parts = [f"{n}{NBSP}{name}{'' if n == 1 else 's'}"]
            if i + 1 < len(chunks):
                size2, name2 = chunks[i + 1]
                n2 = (s - n * size) // size2
                if n2:
                    parts.append(f"{n2}{NBSP}{name2}{'' if n2 == 1 else 's'}")
            return ", ".join(parts)
    return f"0{NBSP}minutes"


def dumps(obj) -> str:
    # Label Studio on SQLite stores JSON with ASCII escapes and ', ' / ': ' separators, key order as sent.
    return json.dumps(obj)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def journal_mode_of(path: str | os.PathLike) -> str:
    """'wal' if the database file header says WAL (bytes 18/19 == 2), else 'delete'."""
    with open(path, "rb") as f:
        head = f.read(100)
    return "wal" if len(head) >= 20 and head[18] == 2 and head[19] == 2 else "delete"


def _uri(path: str | os.PathLike, mode: str | None = None) -> str:
    u = "file:" + urllib.parse.quote(os.path.abspath(path))
    return u + (f"?mode={mode}" if mode else "")


# ------------------------------------------------------------------------------------------- templates
class Template:
    """What a project's label_config allows: control names, target, labels; built from the project row."""

    def __init__(self, kind: str, label_config: str, parsed: dict):
        self.kind = kind
        self.labels: dict[str, list[str]] = {}
        self.types: dict[str, str] = {}
        self.to_name: dict[str, str] = {}
        for name, ctl in parsed.items():
            self.labels[name] = list(ctl.get("labels") or [])
            self.types[name] = ctl.get("type", "")
            self.to_name[name] = (ctl.get("to_name") or [""])[0]
        self.multiple: set[str] = set()
        try:
            root = ET.fromstring(label_config or "<View/>")
            for el in root.iter():
                if el.tag == "Choices" and el.get("choice") == "multiple":
                    self.multiple.add(el.get("name", ""))
        except ET.ParseError:
            pass

    def first(self, ctl_type: str) -> str:
        for name, t in self.types.items():
            if t == ctl_type:
                return name
        raise KeyError(ctl_type)

    @classmethod
    def from_project_row(cls, label_config: str, parsed_json: str | None) -> Template:
        parsed = json.loads(parsed_json or "{}")
        kind = "other"
        for ctl in parsed.values():
            k = KIND_OF_CONTROL.get(ctl.get("type", ""))
            if k:
                kind = k
                break
        return cls(kind, label_config, parsed)


def rid(r: random.Random) -> str:
    return "".join(r.choices(RID_ALPHABET, k=10))


# ----------------------------------------------------------------------------- content pools (seeded use)
IMAGE_SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960), (1920, 1080), (2048, 1536),
               (3840, 2160))
TILE_SIZES = ((256, 256), (512, 512), (1024, 1024))
CITIES = ("berlin", "krakow", "zurich", "malaga", "sao-paulo", "reykjavik", "lyon", "goteborg")
CAPTIONS = (
    "Kreuzung Hauptstra\u00dfe / Bahnhofstra\u00dfe, 07:45 \u2014 Regen",
    "Rue de la Paix, c\u00f4t\u00e9 nord",
    "Plac Nowy, Krak\u00f3w \u2014 rush hour", "Avenida Paulista, S\u00e3o Paulo (noite)",
    "Laugavegur, Reykjav\u00edk \u2014 snow", "Bahnhofplatz Z\u00fcrich, 18:02", "Calle Larios, M\u00e1laga",
)
WEATHER = ("clear", "rain", "fog", "snow", "overcast")

PER = ("Bj\u00f6rn H\u00e5kansson", "Ren\u00e9e O'Connor", "Chlo\u00e9 Dubois", "\u0141ukasz Wi\u015bniewski",
       "Jos\u00e9 M\u00fcller", "Zo\u00eb \u00d8rsted", "Anna Kowalska", "Ada Lindqvist", "Mei Tanaka",
       "Oluwaseun Adeyemi", "\u00cd\u00f1igo Mart\u00ednez", "Kate\u0159ina Nov\u00e1kov\u00e1",
       "Ahmet Y\u0131lmaz", "Siobh\u00e1n N\u00ed Bhriain")
ORG = ("Caf\u00e9 Noir S.A.", "Acme Corp.", "M\u00fcller & S\u00f6hne GmbH", "Nordisk \u00d8lbryggeri A/S",
       "Soci\u00e9t\u00e9 G\u00e9n\u00e9rale", "Fjord Analytics AB", "Banco Na\u00e7\u00e3o",
       "Z\u00fcrcher Kantonalbank", "\u0141\u00f3d\u017a Textiles Sp. z o.o.", "Helios Robotics Ltd.")
LOC = ("Krak\u00f3w", "\u00cele-de-France", "Z\u00fcrich", "M\u00e1laga", "S\u00e3o Paulo", "Reykjav\u00edk",
       "G\u00f6teborg", "\u010cesk\u00fd Krumlov", "Montr\u00e9al", "\u0130zmir", "Troms\u00f8")
MISC = ("Tour de France", "\u0160koda Octavia", "Euro 2024", "Nobel Prize", "Oktoberfest",
        "Champions League", "F\u00eate de la Musique")
POOLS = {"PER": PER, "ORG": ORG, "LOC": LOC, "MISC": MISC}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
NER_TEMPLATES = (
    (10, "{PER} joined {ORG} in {LOC} last week."),
    (10, "In {LOC}, the {ORG} board (chaired by {PER}) approved a \u20ac{NUM}m budget."),
    (10, "After the {MISC}, {PER} flew from {LOC} to {LOC} \u2014 again!"),
    (10, "\u201cWe\u2019re thrilled,\u201d said {PER}, CEO of {ORG} ({LOC})."),
    (10, "Shares of {ORG} rose {NUM}% on {DAY}; analysts in {LOC} were surprised."),
    (10, "{PER} & {PER} met at the {MISC} in {LOC}: \"a great day\", they said."),
    (10, "{ORG}'s office in {LOC} (opened {YEAR}) employs {NUM} people; {PER} leads it."),
    (10, "Did {PER} really win the {MISC}? Sources in {LOC} say yes..."),
    (10, "{PER} \u2014 born in {LOC} \u2014 now works for {ORG} in {LOC}."),
    (8, "{ORG} and {ORG} announced a merger on {DAY}; the new group will be based in {LOC}."),
    (1, "No entities here, just punctuation: \u00bfqu\u00e9? \u00a1s\u00ed! \u2014 \u201cfine\u201d, "
        "(ok) [done] {yes}."),
)
NER_WEIGHTS = [w for w, _ in NER_TEMPLATES]
SLOT_RE = re.compile(r"\{(PER|ORG|LOC|MISC|NUM|DAY|YEAR)\}")
NER_META = ("press release", "blog", "news-wire", "newsletter")

SENTIMENT_TEXT = {
    "Positive": ("Tr\u00e8s bien! Delivery was fast and the box was intact \U0001f44d",
                 "\u00a1Excelente! Lleg\u00f3 antes de lo previsto.",
                 "Great value, works exactly as described.",
                 "\u4ef7\u683c\u5408\u7406\uff0c\u8d28\u91cf\u4e0d\u9519\u3002",
                 "F\u00fcnf Sterne \u2014 w\u00fcrde ich wieder kaufen.", "Love it, my second one already!"),
    "Negative": ("The \"premium\" cable frayed after a week\u2026",
                 "The parcel arrived damaged \u2014 2 of 3 items broken :(",
                 "Worst support experience ever; nobody answered for 3 days.",
                 "N\u00e3o funciona. Pedi reembolso.", "Stopped charging after two weeks."),
    "Neutral": ("Refund processed; took a while, but OK.", "It's fine, nothing special.",
                "Arrived on the expected date.", "Quality is as expected for the price."),
}
TOPIC_TEXT = {
    "Billing": ("Invoice shows \u20ac0.00 but my card was debited \u20ac{amt}?!", "I was charged twice.",
                "The VAT line (19 %) looks wrong on the receipt."),
    "Shipping": ("Tracking said \u201cdelivered\u201d two days before it arrived.",
                 "Courier left it at the gate.",
                 "Shipping to {loc} took {n} days."),
    "Product quality": ("The stitching came loose.", "Battery lasts about {n} hours.",
                        "Material feels cheaper than on the photos."),
    "Customer service": ("Customer service (Zo\u00eb) solved my issue in {n} minutes \u2014 thank you!",
                         "The agent on chat was polite but could not help.", "Nobody called back."),
}
COMMENTS = ("quality issue", "sarcasm?", "mixed feelings",
            "changed my mind: \u201cneutral\u201d after re-reading",
            "mentions refund", "not in English", "double-check topic", "spam?")
CHANNELS = ("app", "web form", "email", "phone")
LOCALES = ("de-DE", "fr-FR", "ja-JP", "pl-PL", "pt-BR", "en-GB", "es-ES")


# ----------------------------------------------------------------------------------- content generation
class Content:
    """Per-kind generation of task data, predictions and annotation results with a seeded RNG."""

    def __init__(self, r: random.Random, tpl: Template, project_id: int):
        self.r = r
        self.tpl = tpl
        self.pid = project_id
        k = tpl.kind
        if k == "bbox":
            self.fn = tpl.first("RectangleLabels")
        elif k == "polygon":
            self.fn = tpl.first("PolygonLabels")
        elif k == "ner":
            self.fn = tpl.first("Labels")
        elif k == "classification":
            self.single = [n for n, t in tpl.types.items() if t == "Choices" and n not in tpl.multiple]
            self.multi = [n for n, t in tpl.types.items() if t == "Choices" and n in tpl.multiple]
            self.textarea = [n for n, t in tpl.types.items() if t == "TextArea"]
        else:
            raise ValueError(f"unsupported project kind {k!r}")
        if k != "classification":
            self.to = tpl.to_name[self.fn]
            self.labels = tpl.labels[self.fn]

    # -- task data: returns (data, meta, upload_file_or_None, ctx)
    def data(self, n: int):
        return getattr(self, "_data_" + self.tpl.kind)(n)

    def _upload(self, name: str):
        prefix = f"{self.r.getrandbits(32):08x}"
        return f"/data/upload/{self.pid}/{prefix}-{name}", f"upload/{self.pid}/{prefix}-{name}"

    def _data_bbox(self, n):
        r = self.r
        w, h = r.choice(IMAGE_SIZES)
        city = r.choice(CITIES)
        cam = r.randint(1, 12)
        x = r.random()
        upload = None
        if x < 0.35:
            url, upload = self._upload(f"street_{n:06d}.{r.choice(('jpg', 'png'))}")
        elif x < 0.8:
            url = f"s3://street-scenes-raw/{city}/cam {cam}/frame_{n:06d}.jpg"
        else:
            url = f"https://images.example.com/street/{city}/frame-{n:06d}.jpg"
        data = {"image": url}
        meta = {}
        if r.random() < 0.06:
            data["caption"] = r.choice(CAPTIONS)
            meta = {"camera": f"cam-{cam}", "weather": r.choice(WEATHER), "frame": n}
        return data, meta, upload, (w, h)

    def _data_polygon(self, n):
        r = self.r
        w, h = r.choice(TILE_SIZES)
        tx, ty = r.randint(60000, 70000), r.randint(40000, 45000)
        x = r.random()
        upload = None
        meta = {}
        if x < 0.3:
            url, upload = self._upload(f"tile_17_{tx}_{ty}.png")
        elif x < 0.85:
            url = f"s3://aerial-tiles/z17/{tx}/{ty}.png"
        else:
            url = f"https://tiles.example.com/aerial/z17/tile {tx}_{ty}.png"
            meta = {"zoom": 17, "provider": "example tiles"}
        return {"image": url}, meta, upload, (w, h)

    def _data_ner(self, n):
        r = self.r
        tmpl = r.choices(NER_TEMPLATES, weights=NER_WEIGHTS)[0][1]
        parts = SLOT_RE.split(tmpl)
        text = ""
        spans = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                text += part
                continue
            if part in POOLS:
                ent = r.choice(POOLS[part])
                spans.append((len(text), len(text) + len(ent), ent, part))
                text += ent
            elif part == "NUM":
                num = r.choice((r.randint(2, 99), round(r.uniform(0.5, 9.9), 1), f"{r.randint(1, 9)},200"))
                text += str(num)
            elif part == "DAY":
                text += r.choice(DAYS)
            else:
                text += str(r.randint(1990, 2024))
        meta = {}
        if r.random() < 0.3:
            meta = {"source": r.choice(NER_META), "lang": "mixed",
                    "ingested": f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T08:00:00Z"}
        return {"text": text}, meta, None, spans

    def _data_classification(self, n):
        r = self.r
        sent_labels = self.tpl.labels[self.single[0]] if self.single else []
        topic_labels = self.tpl.labels[self.multi[0]] if self.multi else []
        sentiment = r.choice(sent_labels) if sent_labels else None
        topics = []
        if topic_labels:
            topics = r.sample(topic_labels, k=min(len(topic_labels), r.choice((1, 1, 1, 2))))
        bits = [r.choice(SENTIMENT_TEXT.get(sentiment, ("No comment.",)))]
        for t in topics:
            if t in TOPIC_TEXT:
                bits.append(r.choice(TOPIC_TEXT[t]).format(amt=f"{r.randint(5, 300)}.{r.randint(0, 99):02d}",
                                                           loc=r.choice(LOC), n=r.randint(2, 45)))
        if r.random() < 0.3:
            bits.append(f"(order #{r.randint(100000, 999999)})")
        meta = {}
        if r.random() < 0.25:
            meta = {"channel": r.choice(CHANNELS), "stars": r.randint(1, 5),
                    "customer": {"tier": r.choice(("free", "gold", "pro")), "locale": r.choice(LOCALES)}}
        return {"text": " ".join(bits)}, meta, None, (sentiment, topics)

    # -- results
    def result(self, ctx, origin: str):
        return getattr(self, "_result_" + self.tpl.kind)(ctx, origin)

    def _img_region(self, w, h, value, typ, origin):
        return {"original_width": w, "original_height": h, "image_rotation": 0, "value": value,
                "id": rid(self.r), "from_name": self.fn, "to_name": self.to, "type": typ, "origin": origin}

    def _result_bbox(self, ctx, origin):
        r = self.r
        w, h = ctx
        out = []
        for _ in range(r.choices((1, 2, 3, 4, 5, 6), weights=(30, 30, 20, 10, 6, 4))[0]):
            bw, bh = r.randint(w // 25, w // 3), r.randint(h // 25, h // 3)
            x, y = r.randint(0, w - bw), r.randint(0, h - bh)
            rot = round(r.uniform(0, 360), 2) if r.random() < 0.08 else 0
            value = {"x": x * 100 / w, "y": y * 100 / h, "width": bw * 100 / w, "height": bh * 100 / h,
                     "rotation": rot, "rectanglelabels": [r.choice(self.labels)]}
            out.append(self._img_region(w, h, value, "rectanglelabels", origin))
        return out

    def _result_polygon(self, ctx, origin):
        r = self.r
        w, h = ctx
        out = []
        for _ in range(r.choices((1, 2, 3, 4, 5), weights=(25, 30, 25, 12, 8))[0]):
            cx, cy = r.randint(w // 8, w - w // 8), r.randint(h // 8, h - h // 8)
            rad = r.randint(max(4, w // 20), max(5, w // 5))
            n = r.randint(3, 12)
            angles = sorted(r.uniform(0, 6.283185307179586) for _ in range(n))
            pts = []
            for a in angles:
                rr = rad * r.uniform(0.6, 1.0)
                px = min(w, max(0, round(cx + rr * math.cos(a))))
                py = min(h, max(0, round(cy + rr * math.sin(a))))
                pts.append([px * 100 / w, py * 100 / h])
            value = {"points": pts, "closed": True, "polygonlabels": [r.choice(self.labels)]}
            out.append(self._img_region(w, h, value, "polygonlabels", origin))
        return out

    def _result_ner(self, spans, origin):
        r = self.r
        out = []
        for start, end, text, label in spans:
            if r.random() < 0.05:
                continue  # annotator missed it
            lab = label if (label in self.labels and r.random() < 0.93) else r.choice(self.labels)
            out.append({"value": {"start": start, "end": end, "text": text, "labels": [lab]}, "id": rid(r),
                        "from_name": self.fn, "to_name": self.to, "type": "labels", "origin": origin})
        return out

    def _text_region(self, name, value, typ, origin):
        return {"value": value, "id": rid(self.r), "from_name": name, "to_name": self.tpl.to_name[name],
                "type": typ, "origin": origin}

    def _result_classification(self, ctx, origin):
        r = self.r
        sentiment, topics = ctx
        out = []
        partial = r.random() < 0.03
        for name in self.single:
            if partial:
                break
            labs = self.tpl.labels[name]
            v = sentiment if (sentiment in labs and r.random() < 0.9) else r.choice(labs)
            out.append(self._text_region(name, {"choices": [v]}, "choices", origin))
        for name in self.multi:
            labs = self.tpl.labels[name]
            v = list(topics) if (topics and r.random() < 0.85) else r.sample(labs, k=r.choice((1, 1, 2)))
            r.shuffle(v)
            out.append(self._text_region(name, {"choices": v}, "choices", origin))
        if origin != "prediction":
            for name in self.textarea:
                if r.random() < 0.3:
                    out.append(self._text_region(name, {"text": [r.choice(COMMENTS)]}, "textarea", origin))
        return out


def copy_result(result):
    """Copy regions and their value dicts (inner lists are replaced, never mutated, by perturb)."""
    return [{**reg, "value": dict(reg["value"])} if "value" in reg else dict(reg) for reg in result]


def perturb(r: random.Random, result: list, tpl: Template) -> list:
    """Return a changed copy of an annotation result: relabel / move / drop one region or rewrite a comment.

    Works on any Label Studio result list (labels taken from the project's parsed_label_config); regions
    that were copied from a prediction become origin 'prediction-changed' as in the editor.
    """
    new = copy_result(result)
    if not new:
        return new
    i = r.randrange(len(new))
    reg = new[i]
    val = reg.get("value", {})
    typ = reg.get("type", "")
    fn = reg.get("from_name", "")
    ops = []
    labels = tpl.labels.get(fn) or []
    if typ in val and isinstance(val[typ], list) and len(labels) > 1:
        ops += ["relabel", "relabel"]
    if "x" in val and "y" in val:
        ops += ["move", "move"]
    if "points" in val:
        ops += ["move", "move"]
    if typ == "textarea":
        ops.append("text")
    if len(new) > 1:
        ops.append("drop")
    if not ops:
        return new
    op = r.choice(ops)
    if op == "drop":
        new.pop(i)
        return new
    if op == "relabel":
        if fn in tpl.multiple:
            val[typ] = r.sample(labels, k=r.choice((1, 1, 2)))
        else:
            cur = val[typ][0] if val[typ] else None
            val[typ] = [r.choice([lab for lab in labels if lab != cur] or labels)]
    elif op == "text":
        val["text"] = [r.choice(COMMENTS)]
    elif op == "move":
        w = reg.get("original_width") or 100
        h = reg.get("original_height") or 100
        dx = dy = 0
        while dx == 0 and dy == 0:
            sx, sy = max(1, w // 30), max(1, h // 30)
            dx, dy = r.randint(-sx, sx), r.randint(-sy, sy)
        if "points" in val:
            val["points"] = [[min(w, max(0, round(px * w / 100) + dx)) * 100 / w,
                              min(h, max(0, round(py * h / 100) + dy)) * 100 / h] for px, py in val["points"]]
        else:
            bw = round(val.get("width", 0) * w / 100)
            bh = round(val.get("height", 0) * h / 100)
            val["x"] = min(max(0, w - bw), max(0, round(val["x"] * w / 100) + dx)) * 100 / w
            val["y"] = min(max(0, h - bh), max(0, round(val["y"] * h / 100) + dy)) * 100 / h
    if reg.get("origin") == "prediction":
        reg["origin"] = "prediction-changed"
    return new


# ------------------------------------------------------------------------------------------ the schema
def _copy_schema_and_base_rows(dst: sqlite3.Connection, schema_from: str):
    """Create every table of the fixture and copy its non-project rows.

    Returns (deferred [(type, sql)] of indexes/triggers/views to create last, fixture sqlite_sequence rows).
    """
    src = sqlite3.connect(_uri(schema_from, "ro"), uri=True)
    try:
        master = src.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
        page_size = src.execute("PRAGMA page_size").fetchone()[0]
        auto_vacuum = src.execute("PRAGMA auto_vacuum").fetchone()[0]
        user_version = src.execute("PRAGMA user_version").fetchone()[0]
        application_id = src.execute("PRAGMA application_id").fetchone()[0]
    finally:
        src.close()
    dst.execute(f"PRAGMA page_size={int(page_size)}")
    dst.execute(f"PRAGMA auto_vacuum={int(auto_vacuum)}")
    dst.execute(f"PRAGMA user_version={int(user_version)}")
    dst.execute(f"PRAGMA application_id={int(application_id)}")
    tables = []
    deferred = []
    for typ, name, _tbl, sql in master:
        if sql is None or name.startswith("sqlite_"):
            continue  # autoindexes come with their CREATE TABLE; sqlite_sequence is created by AUTOINCREMENT
        if typ == "table":
            dst.execute(sql)
            tables.append(name)
        else:
            deferred.append((typ, sql))  # indexes, triggers, views: after the bulk load
    dst.execute("ATTACH DATABASE ? AS fx", (_uri(schema_from, "ro"),))
    dst.execute("BEGIN")
    for name in tables:
        if name in PROJECT_TABLES or name.startswith("io_storages_"):
            continue
        dst.execute(f"INSERT INTO main.{qi(name)} SELECT * FROM fx.{qi(name)}")
    dst.execute("COMMIT")
    dst.execute("DETACH DATABASE fx")
    src = sqlite3.connect(_uri(schema_from, "ro"), uri=True)
    try:
        has_seq = src.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone()
        seq = src.execute("SELECT name, seq FROM sqlite_sequence").fetchall() if has_seq else []
    finally:
        src.close()
    # Safety net for other fixtures: drop kept rows that point at rows that were not copied.
    for _ in range(10):
        bad = dst.execute("PRAGMA foreign_key_check").fetchall()
        if not bad:
            break
        for table, rowid, _parent, _fk in bad:
            if rowid is None:
                raise RuntimeError(f"foreign key violation in WITHOUT ROWID table {table}")
            dst.execute(f"DELETE FROM {qi(table)} WHERE rowid=?", (rowid,))
    return deferred, seq


def _fix_sequence(dst: sqlite3.Connection, fixture_seq: list[tuple[str, int]]) -> None:
    """sqlite_sequence as Label Studio would have it: the fixture's rows (same order), project tables at
    their max(id), any other table at least at its max(id), one row per table, none for empty new ones."""
    tables = {n for (n,) in dst.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    rows = {}
    for name, seq in fixture_seq:
        if name in tables and name not in rows:
            top = dst.execute(f"SELECT COALESCE(MAX(rowid),0) FROM {qi(name)}").fetchone()[0]
            scoped = name in PROJECT_TABLES or name.startswith("io_storages_")
            rows[name] = top if scoped else max(seq or 0, top)
    for (name,) in dst.execute("SELECT DISTINCT name FROM sqlite_sequence").fetchall():
        if name not in rows:  # an INSERT into an AUTOINCREMENT table adds a row even when it inserts none
            top = dst.execute(f"SELECT COALESCE(MAX(rowid),0) FROM {qi(name)}").fetchone()[0]
            if top:
                rows[name] = top
    dst.execute("DELETE FROM sqlite_sequence")
    dst.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", list(rows.items()))


def _timeline_start(dst: sqlite3.Connection) -> int:
    """Latest timestamp of the kept fixture rows (users, organization, migrations); data comes after."""
    latest = []
    for sql in ("SELECT MAX(date_joined) FROM htx_user", "SELECT MAX(created_at) FROM organization",
                "SELECT MAX(applied) FROM django_migrations"):
        try:
            v = dst.execute(sql).fetchone()[0]
        except sqlite3.Error:
            continue
        if v:
            latest.append(parse_ts(v))
    return max(latest) if latest else BASE_US


def _ensure_users(dst: sqlite3.Connection, n_users: int, r: random.Random, base_us: int) -> list[int]:
    ids = [row[0] for row in dst.execute("SELECT id FROM htx_user WHERE is_active=1 ORDER BY id")]
    if len(ids) >= n_users:
        return ids[:n_users]
    cols = [c[1] for c in dst.execute("PRAGMA table_info(htx_user)")]
    last = dst.execute("SELECT * FROM htx_user ORDER BY id DESC LIMIT 1").fetchone()
    tmpl = dict(zip(cols, last, strict=True))
    org = tmpl.get("active_organization_id")
    firsts = ("Mateo", "Ingrid", "Kwame", "Yuki", "Leila", "Tom\u00e1\u0161", "Priya", "Ol\u00edvia")
    lasts = ("Novak", "Fern\u00e1ndez", "Okafor", "Sato", "Haddad", "Dvo\u0159\u00e1k", "Iyer", "Costa")
    next_id = max(ids) + 1
    mcols = [c[1] for c in dst.execute("PRAGMA table_info(organizations_organizationmember)")]
    while len(ids) < n_users:
        u = dict(tmpl)
        i = next_id - 1
        u.update(id=next_id, username=f"annotator{next_id}", email=f"annotator{next_id}@example.com",
                 first_name=firsts[i % len(firsts)], last_name=lasts[(i // len(firsts) + i) % len(lasts)],
                 is_superuser=0, is_staff=0, last_login=None)
        joined = base_us + r.randint(MIN, 20 * MIN)
        for c in ("date_joined", "last_activity", "activity_at"):
            if c in u:
                u[c] = ts(joined)
        dst.execute(f"INSERT INTO htx_user ({','.join(map(qi, cols))}) VALUES ({','.join('?' * len(cols))})",
                    [u[c] for c in cols])
        if org is not None and "user_id" in mcols:
            now = ts(joined + r.randint(200, 900))
            m = {"created_at": now, "updated_at": now, "organization_id": org, "user_id": next_id,
                 "deleted_at": None}
            mc = [c for c in mcols if c in m]
            dst.execute(f"INSERT INTO organizations_organizationmember ({','.join(mc)}) VALUES "
                        f"({','.join('?' * len(mc))})", [m[c] for c in mc])
        ids.append(next_id)
        next_id += 1
    return ids


def _fixture_projects(schema_from: str):
    """kind -> (project row dict, Template, prediction model_version) from the fixture's projects."""
    src = sqlite3.connect(_uri(schema_from, "ro"), uri=True)
    src.row_factory = sqlite3.Row
    try:
        out = {}
        for row in src.execute("SELECT * FROM project ORDER BY id"):
            tpl = Template.from_project_row(row["label_config"], row["parsed_label_config"])
            if tpl.kind in KINDS and tpl.kind not in out:
                mv = src.execute("SELECT model_version FROM prediction WHERE project_id=? AND model_version "
                                 "IS NOT NULL ORDER BY id LIMIT 1", (row["id"],)).fetchone()
                out[tpl.kind] = (dict(row), tpl, mv[0] if mv else f"{tpl.kind}-model-v1")
        return out
    finally:
        src.close()


# ----------------------------------------------------------------------------------------- generate()
def parse_range(s: str | tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(s, int):
        return s, s
    if isinstance(s, tuple):
        return int(s[0]), int(s[1])
    a, _, b = s.partition("..")
    lo, hi = int(a), int(b or a)
    if lo < 1 or hi < lo:
        raise ValueError(f"bad annotations-per-task range {s!r} (want MIN..MAX with 1 <= MIN <= MAX)")
    return lo, hi


def generate(path, tasks: int, projects: int = 4, seed: int = 1, annotations_per_task=(1, 2),
             predictions: float = 0.0, drafts: float = 0.01, schema_from=None, users: int | None = None,
             multi_rate: float = 0.25, cancel_rate: float = 0.08, verbose: bool = False) -> dict:
    """Write a Label Studio SQLite database with `tasks` labeled tasks to `path` (replaced atomically).

    annotations_per_task: (min, max) or "MIN..MAX"; each annotation beyond MIN is added with probability
    `multi_rate`, by distinct users (extra annotator users are created when MAX exceeds the fixture's).
    predictions: fraction of tasks with one prediction. drafts: fraction of tasks with one draft.
    cancel_rate: fraction of additional annotations that are cancelled (skipped); 0.5% of single-annotation
    tasks get only a cancelled annotation (is_labeled=0, still one annotation row).
    Returns a dict of counts and timings.
    """
    t_start = time.perf_counter()
    schema_from = str(schema_from or DEFAULT_SCHEMA)
    amin, amax = parse_range(annotations_per_task)
    if tasks < 1 or projects < 1:
        raise ValueError("tasks and projects must be >= 1")
    path = os.fspath(path)
    tmp = path + ".tmp-gen"
    for p in (tmp, tmp + "-journal"):
        if os.path.exists(p):
            os.remove(p)
    final_journal = journal_mode_of(schema_from)

    r = random.Random(seed)
    dst = sqlite3.connect(_uri(tmp), uri=True, isolation_level=None)
    dst.execute("PRAGMA journal_mode=OFF")
    dst.execute("PRAGMA synchronous=OFF")
    dst.execute("PRAGMA cache_size=-262144")
    dst.execute("PRAGMA temp_store=MEMORY")
    deferred, fixture_seq = _copy_schema_and_base_rows(dst, schema_from)
    base_us = _timeline_start(dst) + HOUR + r.randint(0, 3 * HOUR)
    user_ids = _ensure_users(dst, max(users or 0, amax, 1), r, base_us)
    fx = _fixture_projects(schema_from)
    missing = [k for k in KINDS if k not in fx]
    if missing:
        raise RuntimeError(f"fixture {schema_from} lacks projects of kind {missing}")

    dst.execute("BEGIN")
    # ---- projects
    pcols = [c[1] for c in dst.execute("PRAGMA table_info(project)")]
    projs = []  # dicts: id, kind, tpl, created_us, model_version (project), pred_mv, content
    p_us = base_us + HOUR + r.randint(0, HOUR)
    r2 = random.Random(seed * 7919 + 1)  # content RNG (phase 2)
    for i in range(projects):
        kind = KINDS[i % len(KINDS)]
        row, tpl, pred_mv = fx[kind]
        row = dict(row)
        pid = i + 1
        title = row["title"] if i < len(KINDS) else f"{row['title'][:44]} #{i // len(KINDS) + 1}"
        row.update(id=pid, title=title, created_at=ts(p_us), updated_at=ts(p_us + r.randint(20, 40)),
                   token="".join(r.choices(TOKEN_ALPHABET, k=40)), pinned_at=None, deleted_at=None,
                   deleted_by_id=None, purge_at=None)
        if row.get("model_version"):
            row["updated_at"] = ts(p_us + r.randint(1, 3) * SEC + r.randint(0, SEC))
        dst.execute(f"INSERT INTO project ({','.join(map(qi, pcols))}) VALUES ({','.join('?' * len(pcols))})",
                    [row.get(c) for c in pcols])
        projs.append({"id": pid, "kind": kind, "tpl": tpl, "created_us": p_us,
                      "model_version": row["model_version"], "pred_mv": pred_mv,
                      "content": Content(r2, tpl, pid)})
        p_us += r.randint(5 * MIN, 2 * HOUR)

    # ---- phase 1: plan (ids, times, who) -- all numbers, sorted so ids follow creation time as in LS
    per_proj = [tasks // projects + (1 if i < tasks % projects else 0) for i in range(projects)]
    batches = []
    import_end = base_us + IMPORT_SPAN_US
    for i, cnt in enumerate(per_proj):
        start = projs[i]["created_us"] + 10 * MIN
        while cnt > 0:
            size = min(cnt, r.randint(200, 3000))
            batches.append((r.randint(start, import_end), i, size))
            cnt -= size
    batches.sort()
    t_proj = []      # per task: project index
    t_inner = []     # per task: inner_id
    t_created = []   # per task: created_at µs
    inner = [0] * projects
    for bt, pi, size in batches:
        cur = bt
        for _ in range(size):
            inner[pi] += 1
            t_proj.append(pi)
            t_inner.append(inner[pi])
            t_created.append(cur)
            cur += r.randint(40, 90)

    n_users = len(user_ids)
    uweights = [3.0 if k == 0 else 2.0 if k == 1 else 1.0 for k in range(n_users)]
    anns = []      # [created, task_idx, user, cancelled, gt, from_pred, updated, draft_created, lead, uid, j]
    preds = []     # [created, task_idx]
    drafts_pl = []  # [created, task_idx, annotation j or -1, user, updated, postponed, lead]
    t_pred = [None] * tasks
    for ti in range(tasks):
        c_us = t_created[ti]
        pred_us = None
        if predictions and r.random() < predictions:
            pred_us = c_us + r.randint(2 * SEC, 15 * MIN)
            t_pred[ti] = pred_us
            preds.append([pred_us, ti])
        k = amin
        while k < amax and r.random() < multi_rate:
            k += 1
        first = r.choices(user_ids, weights=uweights)[0]
        who = [first] + r.sample([u for u in user_ids if u != first], k - 1)
        t = max(c_us, pred_us or 0) + int(r.expovariate(1 / (4 * DAY))) + r.randint(5 * SEC, 10 * MIN)
        gt_done = False
        for j in range(k):
            if j:
                t += int(r.expovariate(1 / DAY)) + r.randint(SEC, 10 * MIN)
            cancelled = (j > 0 and r.random() < cancel_rate) or (k == 1 and r.random() < 0.005)
            upd = t + r.randint(25, 60)
            if not cancelled and r.random() < 0.1:  # PATCHed later
                upd = t + r.randint(10 * SEC, 2 * MIN) + int(r.expovariate(1 / (6 * HOUR)))
            gt = False
            if not cancelled and not gt_done and r.random() < 0.01:
                gt = gt_done = True
            from_pred = pred_us is not None and j == 0 and not cancelled and r.random() < 0.5
            dc = t - r.randint(30 * SEC, 2 * DAY) if (not cancelled and r.random() < 0.05) else None
            if dc is not None and dc <= c_us:
                dc = None
            uid = uuid.UUID(int=r.getrandbits(128), version=4).hex
            lead = round(r.uniform(2.0, 150.0), 3)
            anns.append([t, ti, who[j], cancelled, gt, from_pred, upd, dc, lead, uid, j])
        if drafts and r.random() < drafts:
            others = [u for u in user_ids if u not in who]
            if others and r.random() < 0.4:  # someone else started, never submitted
                d_c = c_us + int(r.expovariate(1 / (3 * DAY))) + r.randint(SEC, HOUR)
                drafts_pl.append([d_c, ti, -1, r.choice(others), d_c + r.randint(SEC, 30 * MIN),
                                  r.random() < 0.3, round(r.uniform(1.0, 60.0), 3)])
            else:  # draft of an edit of an existing annotation
                jj = r.randrange(k)
                d_c = t + int(r.expovariate(1 / DAY)) + r.randint(SEC, HOUR)
                drafts_pl.append([d_c, ti, jj, who[jj], d_c + r.randint(SEC, 30 * MIN), False,
                                  round(r.uniform(1.0, 60.0), 3)])

    anns.sort(key=lambda a: a[0])
    t_anns = [[] for _ in range(tasks)]
    for aid, a in enumerate(anns, 1):
        a.append(aid)
        t_anns[a[1]].append(a)
    for lst in t_anns:
        lst.sort(key=lambda a: a[10])
    preds.sort()
    t_pred_id = [0] * tasks
    for pid_, p in enumerate(preds, 1):
        t_pred_id[p[1]] = pid_
    drafts_pl.sort(key=lambda d: d[0])
    t_drafts = defaultdict(list)
    for did, d in enumerate(drafts_pl, 1):
        d.append(did)
        t_drafts[d[1]].append(d)
    t_plan = time.perf_counter()

    # ---- phase 2: content, inserted in task-id order in chunks
    task_sql = ("INSERT INTO task (id, data, created_at, updated_at, is_labeled, project_id, meta, overlap, "
                "file_upload_id, updated_by_id, inner_id, total_annotations, cancelled_annotations, "
                "total_predictions, comment_count, last_comment_updated_at, unresolved_comment_count, "
                "precomputed_agreement, allow_skip) VALUES (?,?,?,?,?,?,?,1,?,?,?,?,?,?,0,NULL,0,NULL,1)")
    ann_sql = ("INSERT INTO task_completion (id, result, was_cancelled, created_at, updated_at, task_id, "
               "prediction, lead_time, result_count, completed_by_id, ground_truth, parent_prediction_id, "
               "last_action, last_created_by_id, project_id, updated_by_id, unique_id, draft_created_at, "
               "import_id, bulk_created, parent_annotation_id) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,?,?,?,?,NULL,0,NULL)")
    pred_sql = ("INSERT INTO prediction (id, result, score, model_version, created_at, updated_at, task_id, "
                "cluster, mislabeling, neighbors, project_id, model_run_id, model_id) "
                "VALUES (?,?,?,?,?,?,?,NULL,0.0,NULL,?,NULL,NULL)")
    draft_sql = ("INSERT INTO tasks_annotationdraft (id, result, created_at, updated_at, task_id, user_id, "
                 "annotation_id, was_postponed, lead_time, import_id) VALUES (?,?,?,?,?,?,?,?,?,NULL)")
    upload_sql = "INSERT INTO data_import_fileupload (id, project_id, user_id, file) VALUES (?,?,?,?)"

    summary = [{"data": Counter(), "ann": Counter(), "labels": defaultdict(Counter)} for _ in projs]
    upload_id = 0
    n_uploads = 0
    CHUNK = 10000
    rows_t, rows_a, rows_p, rows_d, rows_u = [], [], [], [], []

    def flush():
        dst.executemany(upload_sql, rows_u)
        dst.executemany(task_sql, rows_t)
        dst.executemany(pred_sql, rows_p)
        dst.executemany(ann_sql, rows_a)
        dst.executemany(draft_sql, rows_d)
        for lst in (rows_t, rows_a, rows_p, rows_d, rows_u):
            lst.clear()

    for ti in range(tasks):
        task_id = ti + 1
        pi = t_proj[ti]
        pr = projs[pi]
        content: Content = pr["content"]
        pid = pr["id"]
        data, meta, upload, ctx = content.data(t_inner[ti])
        sm = summary[pi]
        sm["data"].update(data.keys())
        fu = None
        if upload is not None:
            upload_id += 1
            n_uploads += 1
            fu = upload_id
            rows_u.append((fu, pid, user_ids[0], upload))
        pred_id = t_pred_id[ti]
        pred_result = None
        pred_embed = None
        if pred_id:
            p_us = t_pred[ti]
            pred_result = content.result(ctx, "prediction")
            score = round(r2.uniform(0.3, 0.99), 4)
            rows_p.append((pred_id, dumps(pred_result), score, pr["pred_mv"], ts(p_us),
                           ts(p_us + r2.randint(15, 40)), task_id, pid))
            if pr["model_version"] and pr["model_version"] == pr["pred_mv"]:
                pred_embed = {"id": pred_id, "result": pred_result, "model_version": pr["pred_mv"],
                              "created_ago": None, "score": score, "cluster": None, "neighbors": None,
                              "mislabeling": 0.0, "created_at": ts_api(p_us), "updated_at": None,
                              "model": None, "model_run": None, "task": task_id, "project": pid}
                pred_embed["updated_at"] = ts_api(p_us + 20)
        total = cancelled_n = 0
        last_us, last_by = (t_pred[ti], user_ids[0]) if pred_id else (t_created[ti], None)
        results_by_j = {}
        prev_result = None
        for a in t_anns[ti]:
            created, _ti, user, cancelled, gt, from_pred, upd, dc, lead, uid, j, aid = a
            if cancelled:
                result = []
                cancelled_n += 1
            else:
                total += 1
                if from_pred:
                    result = copy_result(pred_result)
                    if r2.random() < 0.5:
                        result = perturb(r2, result, content.tpl)
                elif prev_result and r2.random() < 0.7:  # second opinion: mostly agrees, sometimes not
                    if r2.random() < 0.5:
                        result = perturb(r2, prev_result, content.tpl)
                    else:
                        result = copy_result(prev_result)
                    for reg in result:
                        reg["id"] = rid(r2)
                        if reg.get("origin") != "manual":
                            reg["origin"] = "manual"
                else:
                    result = content.result(ctx, "manual")
                prev_result = result
                for reg in result:
                    sm["ann"][f"{reg['from_name']}|{reg['to_name']}|{reg['type']}"] += 1
                    labs = sm["labels"][reg["from_name"]]
                    v = reg["value"].get(reg["type"])
                    if reg["type"] != "textarea" and isinstance(v, list):
                        labs.update(v)
            results_by_j[j] = result
            if pred_embed is not None:
                pred_embed["created_ago"] = timesince(created - t_pred[ti])
                pjson = dumps(pred_embed)
            else:
                pjson = "{}"
            rows_a.append((aid, dumps(result), int(cancelled), ts(created), ts(upd), task_id, pjson, lead,
                           len(result), user, int(gt), pred_id if from_pred else None, pid, user, uid,
                           ts(dc) if dc is not None else None))
            for ev_us in (created, upd):
                if last_us is None or ev_us >= last_us:
                    last_us, last_by = ev_us, user
        if last_by is not None:
            t_upd = last_us + r2.randint(40_000, 60_000)
        else:
            t_upd = t_created[ti] + r2.randint(5, 15)
        rows_t.append((task_id, dumps(data), ts(t_created[ti]), ts(t_upd), int(total >= 1), pid, dumps(meta),
                       fu, last_by, t_inner[ti], total, cancelled_n, 1 if pred_id else 0))
        for d in t_drafts.get(ti, ()):
            d_c, _ti, jj, duser, d_u, postponed, dlead, did = d
            base = results_by_j.get(jj) if jj >= 0 else None
            if base:
                dres = perturb(r2, base, content.tpl)
                ann_id = next(a[11] for a in t_anns[ti] if a[10] == jj)
            else:
                dres = content.result(ctx, "manual")
                ann_id = next((a[11] for a in t_anns[ti] if a[10] == jj), None) if jj >= 0 else None
            rows_d.append((did, dumps(dres), ts(d_c), ts(d_u), task_id, duser, ann_id, int(postponed), dlead))
        if len(rows_t) >= CHUNK:
            flush()
    flush()
    t_rows = time.perf_counter()

    # ---- project summaries (LS keeps one per project)
    for pr, sm in zip(projs, summary, strict=True):
        common = sorted(k for k, v in sm["data"].items() if v == per_proj[pr["id"] - 1])
        labels = {fn: dict(sm["labels"].get(fn, {})) for fn in pr["tpl"].labels}
        dst.execute("INSERT INTO projects_projectsummary (project_id, created_at, all_data_columns, "
                    "common_data_columns, created_annotations, created_labels, created_labels_drafts) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (pr["id"], ts(pr["created_us"] + r.randint(3000, 6000)), dumps(dict(sm["data"])),
                     dumps(common), dumps(dict(sm["ann"])), dumps(labels), "{}"))
    _fix_sequence(dst, fixture_seq)
    dst.execute("COMMIT")

    # ---- indexes, triggers, views (built once, after the bulk load)
    dst.execute("BEGIN")
    for _typ, sql in deferred:
        dst.execute(sql)
    dst.execute("COMMIT")
    t_idx = time.perf_counter()
    dst.execute(f"PRAGMA journal_mode={final_journal.upper()}")
    dst.close()
    os.replace(tmp, path)
    stats = {
        "path": path, "tasks": tasks, "projects": projects, "annotations": len(anns),
        "cancelled": sum(1 for a in anns if a[3]), "predictions": len(preds), "drafts": len(drafts_pl),
        "uploads": n_uploads, "users": len(user_ids), "journal_mode": final_journal,
        "seconds": round(time.perf_counter() - t_start, 2), "seconds_plan": round(t_plan - t_start, 2),
        "seconds_rows": round(t_rows - t_plan, 2), "seconds_indexes": round(t_idx - t_rows, 2),
        "bytes": os.path.getsize(path),
    }
    if verbose:
        print(json.dumps(stats), file=sys.stderr)
    return stats


# ------------------------------------------------------------------------------------------- mutate()
def _templates(con: sqlite3.Connection) -> dict[int, Template]:
    return {pid: Template.from_project_row(lc, plc)
            for pid, lc, plc in con.execute("SELECT id, label_config, parsed_label_config FROM project")}


def _refs_to(con: sqlite3.Connection, parent: str) -> list[tuple[str, str]]:
    out = []
    for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        for fk in con.execute(f"PRAGMA foreign_key_list({qi(t)})"):
            if fk[2] == parent:
                out.append((t, fk[3]))
    return out


def mutate(path, n_changed: int, n_deleted: int, seed: int = 1, actor_id: int = 1) -> dict:
    """Edit `n_changed` and delete `n_deleted` annotations of a Label Studio SQLite database, as LS does.

    Change = PATCH of a (non-cancelled) annotation's result: result, result_count, updated_at,
    updated_by_id change; the task's updated_at (+40..60 ms) and updated_by_id are bumped.
    Delete = the task_completion row is removed (drafts and storage links of the annotation go with it,
    parent_annotation references are nulled), the task's total_annotations / cancelled_annotations /
    is_labeled are recomputed and updated_at / updated_by_id (= actor_id) bumped.
    All event times lie after every timestamp already in the database, one event after the other.
    Returns {"changed": [annotation ids], "deleted": [...], "tasks_changed": [task ids],
    "tasks_deleted_from": [...], "tasks_emptied": [task ids left without annotation rows], "now": ts}.
    """
    r = random.Random(seed)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        tpls = _templates(con)
        latest = []
        for t in ("task", "task_completion", "prediction", "tasks_annotationdraft"):
            v = con.execute(f"SELECT MAX(updated_at) FROM {qi(t)}").fetchone()[0]
            if v:
                latest.append(parse_ts(v))
        now = (max(latest) if latest else BASE_US) + MIN + r.randint(0, SEC)
        live = [row[0] for row in con.execute(
            "SELECT id FROM task_completion WHERE was_cancelled=0 ORDER BY id")]
        n_changed = min(n_changed, len(live))
        changed = sorted(r.sample(live, n_changed))
        chosen = set(changed)
        rest = [row[0] for row in con.execute("SELECT id FROM task_completion ORDER BY id")
                if row[0] not in chosen]
        deleted = sorted(r.sample(rest, min(n_deleted, len(rest))))
        events = [("c", a) for a in changed] + [("d", a) for a in deleted]
        r.shuffle(events)
        refs = [(t, c) for t, c in _refs_to(con, "task_completion")]
        overlap = {}
        touched_c, touched_d = set(), set()
        con.execute("BEGIN")
        for kind, aid in events:
            now += r.randint(200_000, 5 * SEC)
            row = con.execute("SELECT task_id, project_id, completed_by_id, result FROM task_completion "
                              "WHERE id=?", (aid,)).fetchone()
            task_id, project_id, user, result = row
            t_upd = ts(now + r.randint(40_000, 60_000))
            if kind == "c":
                tpl = tpls.get(project_id) or Template("other", "<View/>", {})
                old = json.loads(result or "[]")
                for _ in range(10):  # a PATCH with an unchanged result is possible, but useless for benches
                    new = perturb(r, old, tpl)
                    if new != old:
                        break
                con.execute("UPDATE task_completion SET result=?, result_count=?, updated_at=?, "
                            "updated_by_id=? WHERE id=?", (dumps(new), len(new), ts(now), user, aid))
                con.execute("UPDATE task SET updated_at=?, updated_by_id=? WHERE id=?",
                            (t_upd, user, task_id))
                touched_c.add(task_id)
            else:
                for t, c in refs:
                    if t == "task_completion":
                        con.execute(f"UPDATE task_completion SET {qi(c)}=NULL WHERE {qi(c)}=?", (aid,))
                    else:
                        con.execute(f"DELETE FROM {qi(t)} WHERE {qi(c)}=?", (aid,))
                con.execute("DELETE FROM task_completion WHERE id=?", (aid,))
                tot, canc = con.execute(
                    "SELECT COALESCE(SUM(was_cancelled=0),0), COALESCE(SUM(was_cancelled=1),0) "
                    "FROM task_completion WHERE task_id=?", (task_id,)).fetchone()
                if task_id not in overlap:
                    overlap[task_id] = con.execute("SELECT overlap FROM task WHERE id=?",
                                                   (task_id,)).fetchone()[0]
                con.execute("UPDATE task SET total_annotations=?, cancelled_annotations=?, is_labeled=?, "
                            "updated_at=?, updated_by_id=? WHERE id=?",
                            (tot, canc, int(tot >= (overlap[task_id] or 1)), t_upd, actor_id, task_id))
                touched_d.add(task_id)
        con.execute("COMMIT")
        emptied = sorted(t for t in touched_d if con.execute(
            "SELECT 1 FROM task_completion WHERE task_id=? LIMIT 1", (t,)).fetchone() is None)
        return {"changed": changed, "deleted": deleted, "tasks_changed": sorted(touched_c),
                "tasks_deleted_from": sorted(touched_d), "tasks_emptied": emptied, "now": ts(now)}
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output SQLite file (replaced)")
    ap.add_argument("--tasks", type=int, help="labeled tasks to generate (required unless --mutate)")
    ap.add_argument("--projects", type=int, default=4,
                    help="projects; kinds cycle bbox, ner, classification, polygon")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--annotations-per-task", default="1..2", metavar="MIN..MAX")
    ap.add_argument("--multi-rate", type=float, default=0.25,
                    help="probability of each annotation beyond MIN (default 0.25)")
    ap.add_argument("--predictions", type=float, nargs="?", const=0.3, default=0.0, metavar="FRACTION",
                    help="give FRACTION of the tasks a prediction (bare flag: 0.3; default: none)")
    ap.add_argument("--drafts", type=float, default=0.01, metavar="FRACTION",
                    help="fraction of tasks with a draft (default 0.01)")
    ap.add_argument("--users", type=int, default=None, help="annotators (default: fixture users, >= MAX)")
    ap.add_argument("--schema-from", default=str(DEFAULT_SCHEMA),
                    help="Label Studio SQLite database to copy schema/users from (default: %(default)s)")
    ap.add_argument("--mutate", nargs=2, type=int, metavar=("N_CHANGED", "N_DELETED"),
                    help="instead of generating, mutate the existing OUT database")
    a = ap.parse_args(argv)
    if not a.mutate and not a.tasks:
        ap.error("--tasks N is required (or --mutate N_CHANGED N_DELETED on an existing database)")
    if a.mutate:
        res = mutate(a.out, a.mutate[0], a.mutate[1], seed=a.seed)
        print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in res.items()}))
        return 0
    stats = generate(a.out, a.tasks, projects=a.projects, seed=a.seed,
                     annotations_per_task=a.annotations_per_task, predictions=a.predictions, drafts=a.drafts,
                     schema_from=a.schema_from, users=a.users, multi_rate=a.multi_rate)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
