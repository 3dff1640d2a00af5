"""DICOM JSON → dataset → metadata modules → pixel params, on mutated real metadata.

What a PACS sends as instance metadata goes through ``dataset_from_json``, then
every frame's modules (``metadata_modules_by_frame``, as ``wadors:`` registers an
instance), ``metadata_modules`` (which must be JSON-serialisable, it is served
to users), ``pixel_params`` and ``pixel_params_from_modules``. The seeds are a real
server response and the JSON of the Part 10 seeds' headers; the mutations drop
elements, replace values with any JSON (wrong types, huge or non-finite numbers,
backslash-joined strings), give wrong or missing VRs, add pixel-module, palette,
PET and functional-group attributes, nest sequences, and use BulkDataURI and
InlineBinary (valid or not).

Properties: only our typed errors naming the imageId, no crash or hang.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from imageloader.limits import Limits

from ._checks import run_case
from ._fuzz import fuzz_settings
from ._sandbox import Sandbox
from ._seeds import json_seeds

LIMITS = Limits(max_frame_pixels=1 << 22)
SEGMENTED = ("00281221", "00281222", "00281223")
REPLAYS = [0, 1, 7, *[2, 0xFFFF, 40003, 0] * 10_000, *[0, 0] * 10_000]
SEEDS = json_seeds()
BY_NAME = dict(SEEDS)

VRS = [
    "AE",
    "AS",
    "AT",
    "CS",
    "DA",
    "DS",
    "DT",
    "FL",
    "FD",
    "IS",
    "LO",
    "LT",
    "OB",
    "OD",
    "OF",
    "OL",
    "OV",
    "OW",
    "PN",
    "SH",
    "SL",
    "SQ",
    "SS",
    "ST",
    "SV",
    "TM",
    "UC",
    "UI",
    "UL",
    "UN",
    "UR",
    "US",
    "UT",
    "UV",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**32, 65535, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "-1",
            "1.5",
            "1e309",
            "nan",
            "inf",
            "2147483647",
            "99999999999999999999",
            "1A",
            "1\\2\\3",
            "\\",
            "50\\300",
            "MONOCHROME2",
            "PALETTE COLOR",
            "RGB",
            "YBR_FULL_422",
            "PT",
            "RTDOSE",
            "NM",
            "BQML",
            "START",
            "ATTN\\DECY",
            "20240102",
            "101500",
            "1.2.840.10008.1.2.5",
        ]
    ),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["Alphabetic", "vr", "Value", "00280010", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=12,
)
vrs = st.one_of(st.sampled_from(VRS), st.sampled_from(["", "us", "XX", "US or SS", "SQ "]), scalars)

TAGS = {
    "00280002": "US",
    "00280004": "CS",
    "00280006": "US",
    "00280008": "IS",
    "00280009": "AT",
    "00280010": "US",
    "00280011": "US",
    "00280030": "DS",
    "00280100": "US",
    "00280101": "US",
    "00280102": "US",
    "00280103": "US",
    "00281050": "DS",
    "00281051": "DS",
    "00281052": "DS",
    "00281053": "DS",
    "00281101": "US",
    "00281102": "US",
    "00281103": "US",
    "00281201": "OW",
    "00281202": "OW",
    "00281203": "OW",
    "00281221": "OW",
    "00281222": "OW",
    "00281223": "OW",
    "00200032": "DS",
    "00200037": "DS",
    "00080060": "CS",
    "00541001": "CS",
    "00280051": "CS",
    "00540016": "SQ",
    "00540022": "SQ",
    "52009229": "SQ",
    "52009230": "SQ",
    "00289110": "SQ",
    "3004000C": "DS",
    "3004000E": "DS",
    "00020010": "UI",
    "00083002": "UI",
    "00101030": "DS",
    "00181060": "DS",
    "00181063": "DS",
    "00181065": "DS",
    "00209157": "UL",
}
tags = st.one_of(
    st.sampled_from(sorted(TAGS)),
    st.text("0123456789ABCDEFabcdef", min_size=8, max_size=8),
    st.sampled_from(["GGGG0010", "0028001", "002800100", "", "x"]),
)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> Any:
    """An element: usually ``{"vr": ..., "Value": [...]}``, sometimes anything."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)
    vr = draw(vrs)
    if kind == 1:
        return {"vr": vr, "InlineBinary": draw(st.one_of(st.text(max_size=16), scalars))}
    if kind == 2:
        return {"vr": vr, "BulkDataURI": draw(st.sampled_from(["http://pacs/bulk/1", "x", ""]))}
    if kind == 3 and depth < 3:
        items = draw(st.lists(st.one_of(_items(depth + 1), json_values), max_size=3))
        return {"vr": "SQ", "Value": items}
    values = draw(st.one_of(st.lists(scalars, max_size=4), scalars))
    return {"vr": vr, "Value": values} if draw(st.integers(0, 5)) else {"Value": values}


def _items(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(tags, elements(depth), max_size=4)


# Each op names an element by its position among the dataset's keys.
ops = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 500)),
    st.tuples(st.just("value"), st.integers(0, 500), json_values),
    st.tuples(st.just("vr"), st.integers(0, 500), vrs),
    st.tuples(st.just("element"), st.integers(0, 500), elements()),
    st.tuples(st.just("add"), tags, elements()),
    st.tuples(st.just("nest"), st.integers(0, 500), st.integers(1, 40)),
    st.tuples(st.just("bulk"), st.integers(0, 500)),
)
bulk_data = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["http://pacs/bulk/1", "x", ""]),
        st.one_of(st.binary(max_size=64), st.binary(min_size=512, max_size=600)),
        max_size=2,
    ),
)


def apply(obj: dict[str, Any], edits: list[Any]) -> Any:
    """The dataset with ``edits`` applied (a copy)."""
    out = copy.deepcopy(obj)
    for op in edits:
        keys = sorted(out)
        kind = op[0]
        if kind == "add":
            out[op[1]] = op[2]
            continue
        if not keys:
            continue
        key = keys[op[1] % len(keys)]
        element = out[key]
        if kind == "drop":
            del out[key]
        elif kind == "value" and isinstance(element, dict):
            element["Value"] = op[2]
        elif kind == "vr" and isinstance(element, dict):
            element["vr"] = op[2]
        elif kind == "element":
            out[key] = op[2]
        elif kind == "nest":
            for _ in range(op[2]):
                element = {"vr": "SQ", "Value": [{key: element}]}
            out[key] = element
        elif kind == "bulk" and isinstance(element, dict):
            out[key] = {"vr": element.get("vr", "OW"), "BulkDataURI": "http://pacs/bulk/1"}
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[Any], dict[str, bytes] | None]:
    name = draw(st.sampled_from([name for name, _ in SEEDS]))
    return name, draw(st.lists(ops, min_size=1, max_size=6)), draw(bulk_data)


def test_every_seed_gives_modules(sandbox: Sandbox) -> None:
    # On the unmutated seeds every step succeeds: the property below is not vacuous.
    for name, obj in SEEDS:
        value = run_case(sandbox, "dicomjson seeds", "dicomjson", obj, None, LIMITS).value
        steps = dict(value["steps"])
        assert steps["dataset"] == "ok" and steps["modules by frame"] == "ok", (name, steps)
        if "00280010" in obj and not name.endswith("no-pixel-data.dcm"):
            assert "imagePixelModule" in value["modules"], name
            assert steps["params from modules"] == "ok", (name, steps)


@fuzz_settings(400, sandboxed=True)
@given(cases())
# NumberOfFrames as large as an IS can be, in an instance's metadata.
@example(("MR_small.dcm", [("add", "00280008", {"vr": "IS", "Value": [2147483647]})], None))
# A segmented palette that replays 10,000 empty segments 10,000 times, as US values.
@example(
    (
        "made/segmented-palette",
        [("add", tag, {"vr": "US", "Value": REPLAYS}) for tag in SEGMENTED],
        None,
    )
)
def test_mutated_metadata_gives_typed_errors_or_modules(
    sandbox: Sandbox, case: tuple[str, list[Any], dict[str, bytes] | None]
) -> None:
    name, edits, bulk = case
    obj = apply(BY_NAME[name], edits)
    text = repr(case)
    run_case(sandbox, "dicomjson", "dicomjson", obj, bulk, LIMITS, context=text[:600])


@fuzz_settings(150, sandboxed=True)
@given(st.one_of(json_values, st.text(max_size=40), st.binary(max_size=40)))
def test_any_json_document_gives_a_metadata_error_or_a_dataset(sandbox: Sandbox, obj: Any) -> None:
    run_case(
        sandbox, "dicomjson documents", "dicomjson", obj, None, LIMITS, context=repr(obj)[:300]
    )
