"""The combination test's design: segexport's options in an all-pairs (pairwise) set of rows,
and the table of what each row did (printed by tests/conftest.py's terminal summary).

Every pair of levels of any two factors appears in at least one row; a greedy construction
(the row covering the most uncovered pairs among seeded random candidates, then the next) gives
about a dozen rows for the ten factors below instead of 2**9 * 4 = 2048 exhaustive ones."""

import itertools
import random

FACTORS = (
    ("fp16", (False, True)),
    ("int8", (False, True)),
    ("input", ("float", "uint8")),
    ("output", ("labels", "logits")),
    ("dynamic", (False, True)),
    ("dblock", (False, True)),
    ("triton", (False, True)),
    ("backend", ("auto", "onnxruntime", "openvino", "tensorrt")),
    ("onnx", (False, True)),
    ("openvino", (True, False)),  # importable in the exporting process, or blocked
)

# Pairs segexport refuses up front by design: a fixed-size --onnx graph cannot be made dynamic,
# and --backend openvino needs OpenVINO. The design covers every other pair with rows free of
# these, and shows each of these in one row of its own (expected: refused, in one line).
REFUSED = (
    (("dynamic", True), ("onnx", True)),
    (("backend", "openvino"), ("openvino", False)),
)

# What each row did, in order: (label, outcome); tests/conftest.py prints it after the run.
TABLE = []


def _pairs(row):
    items = sorted(row.items())
    return {(a, b) for a, b in itertools.combinations(items, 2)}


def refused(row):
    """The REFUSED pair ``row`` holds, or None."""
    for pair in REFUSED:
        if all(row[name] == level for name, level in pair):
            return pair
    return None


def all_pairs(factors=FACTORS, candidates=200, seed=23):
    """Rows (dicts factor -> level) covering every pair of levels of every two factors, then
    one row per REFUSED pair."""
    names = [name for name, _ in factors]
    invalid = set(tuple(sorted(pair)) for pair in REFUSED)
    uncovered = set()
    for (n1, l1), (n2, l2) in itertools.combinations(factors, 2):
        for a in l1:
            for b in l2:
                pair = tuple(sorted(((n1, a), (n2, b))))
                if pair not in invalid:
                    uncovered.add(pair)
    rng = random.Random(seed)
    rows = []
    while uncovered:
        # seed each candidate with one uncovered pair so that every round makes progress
        first = sorted(uncovered, key=repr)[0]
        best, best_gain = None, -1
        for _ in range(candidates):
            row = dict((name, rng.choice(levels)) for name, levels in factors)
            row.update(dict(first))
            gain = len(_pairs(row) & uncovered)
            if refused(row) is None and gain > best_gain:
                best, best_gain = row, gain
        rows.append(dict((n, best[n]) for n in names))
        uncovered -= _pairs(best)
    for pair in REFUSED:
        row = dict((name, levels[0]) for name, levels in factors)
        row.update(dict(pair))
        rows.append(row)
    return rows


def label(row):
    """'fp16 int8 uint8 logits dynamic dblock triton backend=openvino onnx, no openvino'."""
    words = []
    for name, levels in FACTORS:
        value = row[name]
        if name == "backend":
            words.append("backend=" + value + (" --print-trtexec" if value == "tensorrt" else ""))
        elif name == "openvino":
            continue
        elif value is True:
            words.append({"int8": "int8 --calib", "onnx": "--onnx FILE"}.get(name, name))
        elif value not in (False, levels[0]):
            words.append(str(value))
    return " ".join(words) + ("" if row["openvino"] else "; OpenVINO blocked")


def format_table():
    width = max(len(lab) for lab, _ in TABLE) if TABLE else 0
    return ["{:<{}}  ->  {}".format(lab, width, outcome) for lab, outcome in TABLE]
