"""Table-driven tests of nbflow.notebook.cells: one row per construct."""

from __future__ import annotations

import textwrap

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from nbflow.notebook.cells import analyze_cell, normalize_source

_transform = TransformerManager().transform_cell

# (id, source, inputs, outputs, deleted)
CASES: list[tuple[str, str, set[str], set[str], set[str]]] = [
    ("simple assignment", "x = 1", set(), {"x"}, set()),
    ("read then write", "y = x + 1", {"x"}, {"y"}, set()),
    ("self update", "x = x + 1", {"x"}, {"x"}, set()),
    ("bound before read", "a = 1\nb = a", set(), {"a", "b"}, set()),
    ("read before bound", "b = a\na = 1", {"a"}, {"a", "b"}, set()),
    ("tuple unpacking", "a, (b, *c) = t", {"t"}, {"a", "b", "c"}, set()),
    ("chained assignment", "a = b = f(x)", {"f", "x"}, {"a", "b"}, set()),
    ("annotated assignment", "n: int = m", {"m"}, {"n"}, set()),
    ("bare annotation binds nothing", "n: MyType", {"MyType"}, set(), set()),
    ("augmented assignment", "total += 1", {"total"}, {"total"}, set()),
    ("augmented on fresh name", "t = 0\nt += v", {"v"}, {"t"}, set()),
    ("builtins are not inputs", "n = len(range(3))\nprint(n)", set(), {"n"}, set()),
    ("ipython names are not inputs", "display(x)\nget_ipython()", {"x"}, set(), set()),
    ("import", "import os", set(), {"os"}, set()),
    ("dotted import binds root", "import os.path", set(), {"os"}, set()),
    ("import as", "import numpy as np", set(), {"np"}, set()),
    ("from import", "from math import pi, tau as t", set(), {"pi", "t"}, set()),
    ("use of import", "import math\ny = math.sqrt(x)", {"x"}, {"math", "y"}, set()),
    ("function def", "def f(a, b=c):\n    return a + b + g", {"c", "g"}, {"f"}, set()),
    (
        "function reads name bound later in cell",
        "def f():\n    return helper()\ndef helper():\n    return 1",
        set(),
        {"f", "helper"},
        set(),
    ),
    (
        "recursive function",
        "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)",
        set(),
        {"fact"},
        set(),
    ),
    ("function locals are not inputs", "def f():\n    z = 1\n    return z", set(), {"f"}, set()),
    (
        "decorator and annotations",
        "@deco\ndef f(a: A) -> R:\n    pass",
        {"deco", "A", "R"},
        {"f"},
        set(),
    ),
    (
        "global in function",
        "def f():\n    global counter\n    counter = 1",
        set(),
        {"f", "counter"},
        set(),
    ),
    ("global read in function", "def f():\n    global k\n    return k", {"k"}, {"f"}, set()),
    (
        "nonlocal stays inside",
        "def f():\n    n = 0\n    def g():\n        nonlocal n\n        n += 1\n    return g",
        set(),
        {"f"},
        set(),
    ),
    (
        "nested function free name",
        "def f():\n    def g():\n        return w\n    return g",
        {"w"},
        {"f"},
        set(),
    ),
    ("lambda", "f = lambda a: a + b", {"b"}, {"f"}, set()),
    ("lambda default", "f = lambda a=d: a", {"d"}, {"f"}, set()),
    (
        "class def",
        "class C(Base):\n    x = y\n    def m(self):\n        return x_mod",
        {"Base", "y", "x_mod"},
        {"C"},
        set(),
    ),
    (
        "class body names invisible to methods",
        "class C:\n    k = 1\n    def m(self):\n        return k",
        {"k"},
        {"C"},
        set(),
    ),
    ("list comprehension scope", "ys = [i * k for i in xs]", {"k", "xs"}, {"ys"}, set()),
    (
        "comprehension variable does not leak",
        "ys = [i for i in xs]\nz = i",
        {"xs", "i"},
        {"ys", "z"},
        set(),
    ),
    ("nested comprehension", "m = {a: [b for b in a] for a in rows if a}", {"rows"}, {"m"}, set()),
    ("generator expression", "s = sum(v * w for v in vals)", {"w", "vals"}, {"s"}, set()),
    ("walrus", "if (n := len(x)) > 1:\n    pass\ny = n", {"x"}, {"n", "y"}, set()),
    (
        "walrus in comprehension binds outside",
        "ys = [last := v for v in xs]",
        {"xs"},
        {"ys", "last"},
        set(),
    ),
    ("del name", "del tmp", set(), set(), {"tmp"}),
    ("bound then deleted", "tmp = 1\ny = tmp\ndel tmp", set(), {"y"}, {"tmp"}),
    ("del subscript mutates", "del d[k]", {"d", "k"}, {"d"}, set()),
    ("subscript assignment mutates", 'df["a"] = col', {"df", "col"}, {"df"}, set()),
    ("attribute assignment mutates", "obj.attr.x = 1", {"obj"}, {"obj"}, set()),
    ("subscript of attribute", "m.rows[i] = v", {"m", "i", "v"}, {"m"}, set()),
    ("augmented subscript", "counts[key] += 1", {"counts", "key"}, {"counts"}, set()),
    ("mutating method", "items.append(x)", {"items", "x"}, {"items"}, set()),
    ("inplace keyword", "df.dropna(inplace=True)", {"df"}, {"df"}, set()),
    ("non mutating method", "n = s.upper()", {"s"}, {"n"}, set()),
    ("mutation of local object", "lst = []\nlst.append(1)", set(), {"lst"}, set()),
    ("for loop target", "for i in range(n):\n    acc = i", {"n"}, {"i", "acc"}, set()),
    (
        "loop binding not definite",
        "for i in xs:\n    last = i\nprint(last)",
        {"xs", "last"},
        {"i", "last"},
        set(),
    ),
    (
        "if both branches bind",
        "if c:\n    v = 1\nelse:\n    v = 2\nw = v",
        {"c"},
        {"v", "w"},
        set(),
    ),
    ("if one branch binds", "if c:\n    v = 1\nw = v", {"c", "v"}, {"v", "w"}, set()),
    ("while loop", "while n > 0:\n    n -= 1", {"n"}, {"n"}, set()),
    ("with as", "with open(path) as fh:\n    text = fh.read()", {"path"}, {"fh", "text"}, set()),
    (
        "try except name is temporary",
        "try:\n    r = f()\nexcept E as err:\n    r = None\nprint(r)",
        {"f", "E"},
        {"r"},
        set(),
    ),
    (
        "try without else binding",
        "try:\n    r = f()\nexcept E:\n    pass\nprint(r)",
        {"f", "E", "r"},
        {"r"},
        set(),
    ),
    (
        "finally binds",
        "try:\n    pass\nfinally:\n    done = True\nprint(done)",
        set(),
        {"done"},
        set(),
    ),
    (
        "match statement",
        "match cmd:\n    case Point(x=px):\n        out = px\n    case [first, *rest]:\n        out = first\n    case _:\n        out = None\nprint(out)",
        {"cmd", "Point"},
        {"px", "out", "first", "rest"},
        set(),
    ),
    ("star import", "from os import *", set(), set(), set()),
    ("top level await", "data = await fetch(url)", {"fetch", "url"}, {"data"}, set()),
    ("async def", "async def go():\n    await thing()", {"thing"}, {"go"}, set()),
    ("line magic", "%matplotlib inline\ny = 2", set(), {"y"}, set()),
    ("magic result assigned", "home = %env HOME", set(), {"home"}, set()),
    ("shell escape reads $name", "files = !ls $folder", {"folder"}, {"files"}, set()),
    ("shell escape reads {expr}", "!echo {prefix + suffix}", {"prefix", "suffix"}, set(), set()),
    ("%time runs code in the namespace", "%time r = slow(n)", {"slow", "n"}, {"r"}, set()),
    ("%timeit does not leak bindings", "%timeit -n 3 q = fast(n)", {"fast", "n"}, set(), set()),
    ("cell with only comments", "# nothing here\n", set(), set(), set()),
    ("expression output", "df.head()", {"df"}, set(), set()),
    ("assert and raise", "assert ok, msg\nraise Err()", {"ok", "msg", "Err"}, set(), set()),
    ("f-string", 'label = f"{name}: {value!r}"', {"name", "value"}, {"label"}, set()),
    ("keyword arguments are not names", "r = f(x=1, y=z)", {"f", "z"}, {"r"}, set()),
    ("slices", "part = arr[lo:hi]", {"arr", "lo", "hi"}, {"part"}, set()),
]


@pytest.mark.parametrize(
    ("source", "inputs", "outputs", "deleted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_analyze_cell(source: str, inputs: set[str], outputs: set[str], deleted: set[str]) -> None:
    result = analyze_cell(source, transform=_transform)
    assert set(result.inputs) == inputs
    assert set(result.outputs) == outputs
    assert set(result.deleted) == deleted


def test_star_import_is_flagged() -> None:
    assert analyze_cell("from os import *").star_import
    assert not analyze_cell("from os import path").star_import


def test_imported_outputs_are_listed() -> None:
    result = analyze_cell("import os\nfrom math import pi as p\nx = p")
    assert result.imported == ("os", "p")
    assert result.outputs == ("os", "p", "x")


def test_inputs_keep_order_of_first_use() -> None:
    assert analyze_cell("z = c + a + b + a").inputs == ("c", "a", "b")


def test_normalized_source_ignores_comments_and_formatting() -> None:
    a = "x  =  1   # one\n\n\ny=[1,2]\n"
    b = textwrap.dedent("""
        # a comment
        x = 1
        y = [1, 2]
    """)
    assert normalize_source(a) == normalize_source(b)
    assert analyze_cell(a).normalized_source == normalize_source(b)
    assert normalize_source("x = 1") != normalize_source("x = 2")


def test_normalized_source_applies_the_transform() -> None:
    assert "run_line_magic" in normalize_source("%time x = 1", transform=_transform)


def test_syntax_error_is_raised() -> None:
    with pytest.raises(SyntaxError):
        analyze_cell("x = (")
