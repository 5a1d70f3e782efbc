"""Parser for Label Studio labeling configs (the project's ``label_config`` XML).

It extracts what the converters need, the same way Label Studio's own export does
(``label_studio_tools.core.label_config.parse_config``): control tags with their
``toName`` objects, object tags with their data keys, and label names in config order
with their attributes (``category``, ``model_index``, ``background``...).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ControlTag", "LabelConfig", "LabelConfigError", "ObjectTag", "parse_label_config"]

_LABEL_TAGS = {"Label", "Choice", "Relation"}
_NOT_CONTROL_TAGS = {"Filter"}


class LabelConfigError(ValueError):
    """The labeling config is not well-formed XML."""


@dataclass(frozen=True)
class ObjectTag:
    """An object tag (``Image``, ``Text``, ``Audio``...): what is labeled."""

    name: str
    type: str
    value: str | None = None  # data key, without the leading "$"
    value_list: str | None = None  # data key of a multi-image (``valueList``) object
    value_type: str | None = None

    @property
    def data_key(self) -> str | None:
        return self.value if self.value is not None else self.value_list


@dataclass
class ControlTag:
    """A control tag (``RectangleLabels``, ``Choices``, ``TextArea``...): what is produced."""

    name: str
    type: str
    to_names: list[str]
    inputs: list[ObjectTag] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # config order, alias or value
    label_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    regex: dict[str, str] = field(default_factory=dict)  # Repeater variables ({{idx}}) -> ".*"
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class LabelConfig:
    """A parsed labeling config. Build it with :func:`parse_label_config`."""

    controls: dict[str, ControlTag]
    objects: dict[str, ObjectTag]
    xml: str = ""
    _patterns: list[tuple[re.Pattern[str], str, int]] = field(default_factory=list, repr=False)
    _match_cache: dict[str, str | None] = field(default_factory=dict, repr=False)
    _type_map: dict[str, str] | None = field(default=None, repr=False, compare=False)
    _region_plans: Any = field(default=None, repr=False, compare=False)  # items._RegionPlans, made on use

    def __post_init__(self) -> None:
        for name, control in self.controls.items():
            if not control.regex:
                continue
            pattern = name
            for variable, rx in control.regex.items():
                pattern = pattern.replace(variable, rx)
            self._patterns.append((re.compile(pattern), name, len(pattern)))

    @property
    def control_type_map(self) -> dict[str, str]:
        """Control name -> tag type (``RectangleLabels``...), cached."""
        cached = self._type_map
        if cached is None or len(cached) != len(self.controls):
            cached = self._type_map = {name: c.type for name, c in self.controls.items()}
        return cached

    @property
    def data_keys(self) -> list[str]:
        """Data keys read by the objects that controls point to (first-seen order)."""
        keys: dict[str, None] = {}
        for control in self.controls.values():
            for obj in control.inputs:
                if obj.data_key is not None:
                    keys.setdefault(obj.data_key, None)
        return list(keys)

    @property
    def control_types(self) -> set[str]:
        return {c.type for c in self.controls.values()}

    @property
    def object_types(self) -> set[str]:
        return {o.type for c in self.controls.values() for o in c.inputs}

    @property
    def is_multi_image(self) -> bool:
        return any(o.value_list for c in self.controls.values() for o in c.inputs)

    def controls_of_type(self, *types: str) -> list[ControlTag]:
        wanted = {t.lower() for t in types}
        return [c for c in self.controls.values() if c.type.lower() in wanted]

    def labels_of_type(self, *types: str) -> list[str]:
        """Label names of all controls of the given types, config order, without duplicates."""
        out: dict[str, None] = {}
        for control in self.controls_of_type(*types):
            for label in control.labels:
                out.setdefault(label, None)
        return list(out)

    def match_control(self, from_name: str) -> str | None:
        """Name of the control a result's ``from_name`` belongs to (handles Repeater ``{{idx}}``)."""
        try:
            return self._match_cache[from_name]
        except KeyError:
            pass
        if from_name in self.controls:
            found: str | None = from_name
        else:
            found, best = None, 0
            for pattern, name, length in self._patterns:
                if pattern.match(from_name) and length > best:
                    found, best = name, length
        if len(self._match_cache) < 10000:
            self._match_cache[from_name] = found
        return found

    def describe(self) -> str:
        """Short human description of the control tags, e.g. ``Choices, TextArea``."""
        types = sorted(self.control_types)
        return ", ".join(types) if types else "no control tags"


def _strip_ns(tag: object) -> str:
    return tag if isinstance(tag, str) else ""


def parse_label_config(source: str | Path) -> LabelConfig:
    """Parse a labeling config given as an XML string or a path to an XML file."""
    if isinstance(source, Path):
        text = source.read_text(encoding="utf-8")
    else:
        text = source
    if not text or not text.strip():
        return LabelConfig(controls={}, objects={}, xml=text or "")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not valid XML: {exc}") from exc

    parents: dict[ET.Element, ET.Element] = {}
    for parent in root.iter():
        for child in parent:
            parents[child] = parent

    objects: dict[str, ObjectTag] = {}
    controls: dict[str, ControlTag] = {}
    labels: dict[str, dict[str, dict[str, str]]] = {}
    variables: list[str] = []

    for tag in root.iter():
        name = _strip_ns(tag.tag)
        attrib = tag.attrib
        if "indexFlag" in attrib:
            variables.append(attrib["indexFlag"])
        if attrib.get("name") and attrib.get("toName") and name not in _NOT_CONTROL_TAGS:
            to_names = attrib["toName"].split(",")
            regex: dict[str, str] = {}
            for variable in variables:
                if any(variable in to for to in to_names):
                    regex[variable] = ".*"
            controls[attrib["name"]] = ControlTag(
                name=attrib["name"], type=name, to_names=to_names, regex=regex, attrs=dict(attrib)
            )
        elif attrib.get("name") and (attrib.get("value") or attrib.get("valueList")):
            value = attrib.get("value")
            value_list = None if value is not None else attrib.get("valueList")
            objects[attrib["name"]] = ObjectTag(
                name=attrib["name"],
                type=name,
                value=value.lstrip("$") if value is not None else None,
                value_list=value_list.lstrip("$") if value_list is not None else None,
                value_type=attrib.get("valueType"),
            )
        if name not in _LABEL_TAGS:
            continue
        parent = parents.get(tag)
        while parent is not None and parent.attrib.get("name") not in controls:
            parent = parents.get(parent)
        if parent is None:
            continue
        actual = attrib.get("alias") or attrib.get("value") or attrib.get("valueList")
        if actual:
            labels.setdefault(parent.attrib["name"], {})[actual] = dict(attrib)

    for control in controls.values():
        control.inputs = [objects[to] for to in control.to_names if to in objects]
        attrs = labels.get(control.name, {})
        control.labels = list(attrs)
        control.label_attrs = attrs
    return LabelConfig(controls=controls, objects=objects, xml=text)
