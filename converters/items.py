"""Task documents -> Label Studio's per-annotation "items".

Label Studio's converter does not work on tasks directly: it first turns every task into one
item per non-cancelled annotation (newest first), or one empty item for a task without any
annotation, keeping only results whose ``from_name`` is a control of the config. Every format
except JSON is built from these items, so this module reproduces that step exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .base import ConvertOptions
from .jsonstream import Unreadable
from .label_config import LabelConfig

__all__ = ["ItemTask", "Item", "RegionTask", "annotator", "iter_items", "prettify_result"]


# The part of a task document that ``task_items`` reads, as a typed schema for msgspec: a worker
# process decodes an export's tasks straight into dicts holding only these keys (skipping the
# rest, such as predictions and the prediction copied into every annotation, costs almost
# nothing), which is ~3x faster than parsing whole tasks. Keys absent from a task stay absent.
# Any JSON this schema does not fit (a result that is not an object, NaN...) makes the decoder
# fail, and that batch is then parsed whole, the usual way: same items, same warnings.
# ``RegionTask`` is what the formats built from regions alone read (COCO, YOLO, CONLL2003: not
# who made an annotation, when it was last changed, its lead time or history, the task's
# agreement, region ids); ``ItemTask`` is all of it.
class _RegionFields(TypedDict, total=False):
    from_name: Any
    type: Any
    value: Any
    original_width: Any
    original_height: Any


class _ResultFields(_RegionFields, total=False):
    id: Any
    parentID: Any


class _AnnotationBase(TypedDict, total=False):
    id: Any
    was_cancelled: Any
    skipped: Any
    created_at: Any


class _RegionAnnotationFields(_AnnotationBase, total=False):
    result: list[_RegionFields] | None


class _AnnotationFields(_AnnotationBase, total=False):
    result: list[_ResultFields] | None
    completed_by: Any
    updated_at: Any
    lead_time: Any
    history: Any


class RegionTask(TypedDict, total=False):
    id: Any
    data: Any
    annotations: list[_RegionAnnotationFields] | None
    completions: list[_RegionAnnotationFields] | None


class ItemTask(TypedDict, total=False):
    id: Any
    data: Any
    annotations: list[_AnnotationFields] | None
    completions: list[_AnnotationFields] | None
    agreement: Any


@dataclass(slots=True)
class Item:
    id: Any
    input: dict
    output: dict[str, list[dict]]
    completed_by: Any = None  # None: no annotation (Label Studio's ``{}``)
    annotation_id: Any = None
    created_at: Any = None
    updated_at: Any = None
    lead_time: Any = None
    history: Any = None
    was_cancelled: Any = None
    extra: dict = field(default_factory=dict)  # "agreement" when the task has it


def annotator(item: Item, default: Any = None, int_id: bool = False) -> Any:
    """Label Studio's ``get_annotator``: the user id (as str unless ``int_id``)."""
    who = item.completed_by
    if who is None:
        return default
    if isinstance(who, dict):
        return who.get("email", default)
    if isinstance(who, int) and not isinstance(who, bool) and int_id:
        return who
    return str(who)


def _user_id(value: Any) -> Any:
    """``completed_by`` as Label Studio's JSON export prints it (the user id)."""
    if isinstance(value, dict):
        if "id" in value:
            return value["id"]
        return value
    return value


def _created_key(annotation: dict) -> str:
    value = annotation.get("created_at")
    return value if isinstance(value, str) else ""


class MalformedTask(ValueError):
    pass


_NO_EXTRA: dict = {}  # Item.extra of tasks without "agreement" (shared: read, never changed)



def task_items(task: dict, config: LabelConfig, with_region_ids: bool = False, owned: bool = False) -> list[Item]:
    """The items of one task (raises MalformedTask / KeyError / TypeError on a bad task).
    ``owned``: the task was decoded for this call alone (in a worker process), so its results'
    values become the items' values, completed in place rather than copied; the keys come out
    in the same order either way, so the task may still be processed again (``parallel.Redo``)."""
    if not isinstance(task, dict):
        raise MalformedTask(task.reason if isinstance(task, Unreadable) else "task is not a JSON object")
    if "annotations" in task:
        annotations = task["annotations"]
    elif "completions" in task:
        annotations = task["completions"]
    else:
        raise MalformedTask('task has no "annotations"')
    data = task.get("data")
    if not isinstance(data, dict):
        raise MalformedTask('task has no "data" object')
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        raise MalformedTask('"annotations" is not a list')
    task_id = task.get("id")
    extra = {"agreement": task["agreement"]} if "agreement" in task else _NO_EXTRA
    if not annotations:
        return [Item(id=task_id, input=data, output={}, extra=extra)]
    kept = []
    for a in annotations:
        if not isinstance(a, dict):
            raise MalformedTask("an annotation is not a JSON object")
        if not (a.get("skipped", False) or a.get("was_cancelled", False)):
            kept.append(a)
    if not kept:
        return []
    if len(kept) > 1:
        kept.sort(key=_created_key, reverse=True)

    plans = _region_plans(config)
    no_schema = not plans.control_types
    items = []
    for a in kept:
        who = a["completed_by"] if "completed_by" in a else None
        if isinstance(who, dict):
            who = _user_id(who)
        result = a.get("result") or []
        if not isinstance(result, list):
            raise MalformedTask(f'annotation {a.get("id")}: "result" is not a list')
        outputs: dict[str, list[dict]] = {}
        for r in result:
            if not isinstance(r, dict):
                raise MalformedTask(f"annotation {a.get('id')}: a result is not a JSON object")
            from_name = r.get("from_name")
            if not from_name:
                continue
            plan = plans[from_name] if isinstance(from_name, str) else None
            if plan is not None:
                tag_type, labels_key, coordinates = plan
                value = r.get("value")
                if value.__class__ is not dict and not isinstance(value, dict):
                    raise MalformedTask(f"annotation {a.get('id')}: result {r.get('id')} has no value")
                # the region check (``_region_problem``), inlined for the common case: labels that
                # are strings, coordinates that are floats or ints
                checked = True
                if labels_key is not None:
                    labels = value.get(labels_key)
                    if labels is not None:
                        if labels.__class__ is list:
                            for label in labels:
                                if label.__class__ is not str:
                                    checked = False
                        else:
                            checked = False
                for name in coordinates:
                    kind = value.get(name).__class__
                    if kind is not float and kind is not int:
                        checked = False
                if not checked:
                    problem = _region_problem(value, tag_type)
                    if problem is not None:
                        raise MalformedTask(f"annotation {a.get('id')}: result {r.get('id')}: {problem}")
                if owned:
                    v = value
                    v["type"] = tag_type
                else:
                    v = {**value, "type": tag_type}
                if "original_width" in r:
                    v["original_width"] = r["original_width"]
                if "original_height" in r:
                    v["original_height"] = r["original_height"]
                if with_region_ids:
                    v["id"] = r.get("id")
                    v["parentID"] = r.get("parentID")
            elif r.get("type") == "chatmessage":
                v = dict(r.get("value") or {})
                v["type"] = "chatmessage"
            elif no_schema:
                v = dict(r.get("value") or {})
                v["type"] = r.get("type") or "unknown"
                if "original_width" in r:
                    v["original_width"] = r["original_width"]
                if "original_height" in r:
                    v["original_height"] = r["original_height"]
            else:
                continue
            values = outputs.get(from_name)
            if values is None:
                outputs[from_name] = [v]
            else:
                values.append(v)
        items.append(Item(task_id, data, outputs, who, a.get("id"), a.get("created_at"), a.get("updated_at"),
                          a.get("lead_time"), a.get("history"), a.get("was_cancelled"), extra))
    return items


class _RegionPlans(dict):
    """A result's ``from_name`` -> (its control's tag type, the key of its label list or None, the
    coordinates it needs), or None when it names no control of the config: one look-up per
    result instead of matching the name, then the type, then its region spec."""

    def __init__(self, config: LabelConfig) -> None:
        super().__init__()
        self.config = config
        self.control_types = config.control_type_map

    def __missing__(self, from_name: str) -> tuple[str, str | None, tuple[str, ...]] | None:
        tag_name = self.config.match_control(from_name)
        plan = None
        if tag_name:
            tag_type = self.control_types[tag_name]
            plan = (tag_type, *(_REGION_SPECS.get(tag_type) or _region_spec(tag_type)))
        if len(self) < 10000:  # (as the config's own cache of matches)
            self[from_name] = plan
        return plan


def _region_plans(config: LabelConfig) -> _RegionPlans:
    """The config's ``_RegionPlans``, made again when its controls changed."""
    plans = config._region_plans
    if plans is None or plans.control_types is not config.control_type_map:
        plans = config._region_plans = _RegionPlans(config)
    return plans


# What each region type must hold, as numbers, for the formats that draw it.
_COORDINATES = {"rectanglelabels": ("x", "y", "width", "height"), "rectangle": ("x", "y", "width", "height"),
                "keypointlabels": ("x", "y"), "keypoint": ("x", "y"),
                "ellipselabels": ("x", "y", "radiusX", "radiusY"), "ellipse": ("x", "y", "radiusX", "radiusY")}


# tag type -> (the key of its label list or None, the coordinates it needs); tag types come
# from labeling configs, so this stays small
_REGION_SPECS: dict[str, tuple[str | None, tuple[str, ...]]] = {}


def _region_spec(tag_type: str) -> tuple[str | None, tuple[str, ...]]:
    kind = tag_type.lower()
    spec = (kind if kind.endswith("labels") or kind in ("choices", "taxonomy") else None, _COORDINATES.get(kind, ()))
    _REGION_SPECS[tag_type] = spec
    return spec


def _region_problem(value: dict, tag_type: str) -> str | None:
    """Why a result value cannot be exported (None: it can): its label list is not a list of
    strings (a bare string would become one class per character), or a coordinate its type
    needs is missing or not a number."""
    labels_key, coordinates = _REGION_SPECS.get(tag_type) or _region_spec(tag_type)
    if labels_key is not None:
        labels = value.get(labels_key)
        if labels is not None:
            if not isinstance(labels, list):
                return f"{labels_key} is {type(labels).__name__} {labels!r:.40}, not a list of labels"
            for label in labels:
                if not isinstance(label, (str, list)):
                    return f"{labels_key} is {type(labels).__name__} {labels!r:.40}, not a list of labels"
    for name in coordinates:
        number = value.get(name)
        kind = type(number)
        if kind is not float and kind is not int and (isinstance(number, bool) or not isinstance(number, (int, float))):
            return f"{name} is {'missing' if number is None else repr(number)[:40]}, not a number"
    return None


def task_id_of(task: object) -> object:
    if isinstance(task, Unreadable):
        return task.task_id
    return task.get("id", "?") if isinstance(task, dict) else "?"


def task_items_or_warn(task: object, config: LabelConfig, warn: Callable[[object, str], None],
                       with_region_ids: bool = False, owned: bool = False) -> list[Item]:
    """``task_items``; a malformed task is reported through ``warn`` and gives no items."""
    try:
        return task_items(task, config, with_region_ids, owned)  # type: ignore[arg-type]
    except (MalformedTask, KeyError, TypeError, AttributeError, ValueError) as exc:
        warn(task_id_of(task), str(exc) or type(exc).__name__)
        return []


def iter_task_items(
    tasks: Iterable[dict], config: LabelConfig, options: ConvertOptions, with_region_ids: bool = False
) -> Iterator[tuple[dict, list[Item]]]:
    """(task, items) per task; malformed tasks are reported through ``options.warn`` and skipped."""
    for task in tasks:
        try:
            items = task_items(task, config, with_region_ids)
        except (MalformedTask, KeyError, TypeError, AttributeError, ValueError) as exc:
            options.warn(task_id_of(task), str(exc) or type(exc).__name__)
            continue
        yield task, items


def iter_items(
    tasks: Iterable[dict], config: LabelConfig, options: ConvertOptions, with_region_ids: bool = False
) -> Iterator[Item]:
    warn = options.warn
    for task in tasks:
        try:
            items = task_items(task, config, with_region_ids)
        except (MalformedTask, KeyError, TypeError, AttributeError, ValueError) as exc:
            warn(task_id_of(task), str(exc) or type(exc).__name__)
            continue
        yield from items


def prettify_result(values: list[dict], in_place: bool = False) -> Any:
    """Label Studio's ``prettify_result``: one choice / one text becomes a plain string. With
    ``in_place`` the values lose their "type" instead of being copied (for values of items that
    are not used again)."""
    out = []
    tag_type = None
    for value in values:
        j = value if in_place else value.copy()
        tag_type = j.pop("type", None)
        if tag_type == "Choices" and len(j["choices"]) == 1:
            out.append(j["choices"][0])
        elif tag_type == "TextArea" and len(j["text"]) == 1:
            out.append(j["text"][0])
        elif tag_type in ("Chat", "chatmessage"):
            out.append(j.get("chatmessage", j))
        else:
            out.append(j)
    return out[0] if tag_type in ("Choices", "TextArea") and len(out) == 1 else out
