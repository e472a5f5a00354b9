"""Static analysis of a notebook cell: its inputs, outputs and normalized source.

A ``%%task`` cell's **inputs** are the module-level names it reads before binding them
(so earlier cells must have defined them); its **outputs** are the names it binds at
module level, plus the names it mutates in place (``df["a"] = 1``, ``obj.x += 1``,
``items.append(3)``, ``del d[k]``).  The analysis runs on the source *after* IPython's
input transformations (pass ``transform=shell.transform_cell``), so line magics and shell
escapes are plain calls; ``$name`` and ``{expr}`` in their arguments count as reads.

The analysis is deliberately conservative where the answer depends on run time:

- a name bound only in a branch (``if``, loop body, ``try``) is an output, but a later read
  of it still counts as an input, because the branch may not run;
- names a function body reads from module scope are inputs unless the cell binds them
  anywhere (the body runs when called, usually after the cell bound them);
- ``global x`` followed by an assignment inside a function makes ``x`` an output;
- ``from m import *`` sets :attr:`CellAnalysis.star_import` (outputs are then unknown).

The module is pure: it imports no IPython and executes nothing.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["CellAnalysis", "analyze_cell", "normalize_source"]

#: Names IPython puts in every kernel namespace; reading them is not a dependency.
IPYTHON_NAMES = frozenset(
    {"get_ipython", "In", "Out", "exit", "quit", "display", "_", "__", "___", "_ih", "_oh", "_dh"}
)
_IGNORED = frozenset(dir(builtins)) | IPYTHON_NAMES | {"__name__", "__file__", "__builtins__"}

#: Method names that mutate their receiver in place (list, dict, set, deque, pandas).
MUTATING_METHODS = frozenset(
    {
        "append", "extend", "insert", "pop", "popleft", "appendleft", "remove", "clear",
        "sort", "reverse", "update", "setdefault", "popitem", "add", "discard",
        "difference_update", "intersection_update", "symmetric_difference_update",
        "rotate", "fill", "resize", "itemset", "put", "setflags",
    }
)  # fmt: skip

#: IPython calls (after transform_cell) whose string argument is expanded with ``$x``/``{x}``.
_EXPANDING_CALLS = {"system": 0, "getoutput": 0, "run_line_magic": 1, "run_cell_magic": 1}
#: Line magics whose argument is Python code run in the user namespace.
_CODE_MAGICS = frozenset({"time", "timeit", "prun", "debug"})
_DOLLAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACES = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")

_PARSE_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


@dataclass(frozen=True)
class CellAnalysis:
    """What a cell reads, writes and deletes at module level, and its normalized source."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    normalized_source: str = ""
    star_import: bool = False
    #: The outputs bound by ``import`` statements (modules, imported names).
    imported: tuple[str, ...] = ()


def _parse(source: str) -> ast.Module:
    tree = compile(source, "<cell>", "exec", flags=_PARSE_FLAGS, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    return tree


def normalize_source(source: str, transform: Callable[[str], str] | None = None) -> str:
    """Return the cell's code without comments, blank lines or formatting differences."""
    code = transform(source) if transform else source
    return ast.unparse(_parse(code))


def analyze_cell(source: str, transform: Callable[[str], str] | None = None) -> CellAnalysis:
    """Return the inputs, outputs and normalized source of one cell's code.

    ``transform`` is IPython's ``shell.transform_cell`` (or ``TransformerManager``'s); give
    it whenever the cell may contain magics.  A cell that is not valid Python raises
    ``SyntaxError`` like executing it would.
    """
    code = transform(source) if transform else source
    tree = _parse(code)
    walker = _ModuleWalker()
    walker.statements(tree.body)
    inputs = dict(walker.inputs)
    for name in walker.deferred_reads:
        if name not in walker.ever_bound:
            inputs.setdefault(name, None)
    outputs = {n: None for n in walker.outputs if n not in walker.deleted}
    return CellAnalysis(
        inputs=tuple(n for n in inputs if n not in _IGNORED),
        outputs=tuple(outputs),
        deleted=tuple(n for n in walker.deleted if n not in outputs),
        normalized_source=ast.unparse(tree),
        star_import=walker.star_import,
        imported=tuple(n for n in walker.imported if n in outputs),
    )


# --------------------------------------------------------------------------- nested scopes


def _target_names(target: ast.expr) -> Iterable[str]:
    """Yield the names a simple assignment target binds (``a, (b, *c)``)."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from _target_names(elt)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def _pattern_names(pattern: ast.pattern) -> Iterable[str]:
    """Yield the names a ``match`` pattern captures."""
    for node in ast.walk(pattern):
        if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            yield node.name
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node.rest


def _scope_free_names(node: ast.AST) -> tuple[set[str], set[str], set[str]]:
    """Return (names read, names read later, names written via ``global``) of a scope.

    ``node`` is a function, lambda, class or comprehension.  "Read later" is only used for
    a class: the free names of its methods, which run when called; a class body's own
    names are invisible to its methods.
    """
    local: set[str] = set()
    declared_global: set[str] = set()
    nonlocal_: set[str] = set()
    reads: set[str] = set()
    inner_free: set[str] = set()
    global_writes: set[str] = set()

    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                local.add(arg.arg)
        body: list[ast.AST] = list(node.body) if isinstance(node.body, list) else [node.body]
    elif isinstance(node, ast.ClassDef):
        body = list(node.body)
    else:  # comprehension
        assert isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp)
        for gen in node.generators:
            local.update(_target_names(gen.target))
        body = [*node.generators, node]

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                local.add(n.name)
                for dec in n.decorator_list:
                    visit(dec)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                for default in [*n.args.defaults, *(d for d in n.args.kw_defaults if d)]:
                    visit(default)
            if isinstance(n, ast.ClassDef):
                for base in [*n.bases, *(k.value for k in n.keywords)]:
                    visit(base)
            free, later, gw = _scope_free_names(n)
            inner_free.update(free | later)
            global_writes.update(gw)
            return
        if isinstance(n, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            visit(n.generators[0].iter)
            free, later, gw = _scope_free_names(n)
            inner_free.update(free | later)
            global_writes.update(gw)
            for sub in ast.walk(n):  # walrus in a comprehension binds in this scope
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    local.add(sub.target.id)
            return
        if isinstance(n, ast.Global):
            declared_global.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            nonlocal_.update(n.names)
        elif isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Load):
                reads.add(n.id)
            else:
                local.add(n.id)
        elif isinstance(n, ast.alias):
            if n.name != "*":
                local.add(n.asname or n.name.split(".")[0])
        elif isinstance(n, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and n.name:
            local.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            local.add(n.rest)
        for child in ast.iter_child_nodes(n):
            visit(child)

    for stmt in body:
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            if stmt is node:
                for field in ("elt", "key", "value"):
                    sub = getattr(node, field, None)
                    if sub is not None:
                        visit(sub)
                continue
            assert isinstance(stmt, ast.comprehension)
            if stmt is not node.generators[0]:
                visit(stmt.iter)
            for cond in stmt.ifs:
                visit(cond)
            continue
        visit(stmt)

    local -= declared_global
    global_writes.update(declared_global & _assigned_names(body))
    if isinstance(node, ast.ClassDef):
        return reads - local - nonlocal_, inner_free, global_writes
    return (reads | inner_free) - local - nonlocal_, set(), global_writes


def _assigned_names(body: list[ast.AST]) -> set[str]:
    """Return names stored anywhere in ``body`` (used with ``global`` declarations)."""
    names: set[str] = set()
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
                names.add(n.id)
            elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(n.name)
            elif isinstance(n, ast.alias) and n.name != "*":
                names.add(n.asname or n.name.split(".")[0])
    return names


# --------------------------------------------------------------------------- module scope


def _root_name(node: ast.expr) -> str | None:
    """Return ``a`` for ``a``, ``a.b.c``, ``a[0].b``, ``a.b[1]``."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _ModuleWalker:
    """Walk module-level statements in order, tracking which names are surely bound."""

    def __init__(self) -> None:
        self.inputs: dict[str, None] = {}
        self.outputs: dict[str, None] = {}
        self.deleted: dict[str, None] = {}
        self.bound: set[str] = set()
        self.ever_bound: set[str] = set()
        self.deferred_reads: dict[str, None] = {}
        self.imported: dict[str, None] = {}
        self.star_import = False

    # -- primitives
    def read(self, name: str) -> None:
        if name not in self.bound:
            self.inputs.setdefault(name, None)

    def bind(self, name: str) -> None:
        self.bound.add(name)
        self.ever_bound.add(name)
        self.outputs.setdefault(name, None)
        self.deleted.pop(name, None)

    def mutate(self, name: str) -> None:
        self.read(name)
        self.outputs.setdefault(name, None)

    def delete(self, name: str) -> None:
        self.bound.discard(name)
        self.outputs.pop(name, None)
        self.deleted.setdefault(name, None)

    def nested(self, node: ast.AST, deferred: bool) -> None:
        free, later, global_writes = _scope_free_names(node)
        for name in sorted(free):
            if deferred:
                self.deferred_reads.setdefault(name, None)
            else:
                self.read(name)
        for name in sorted(later):
            self.deferred_reads.setdefault(name, None)
        for name in sorted(global_writes):
            self.outputs.setdefault(name, None)
            self.ever_bound.add(name)

    # -- statements
    def statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def branch(self, body: list[ast.stmt], start: set[str]) -> set[str]:
        self.bound = set(start)
        self.statements(body)
        return self.bound

    def statement(self, s: ast.stmt) -> None:
        if isinstance(s, ast.Assign):
            self.expr(s.value)
            for target in s.targets:
                self.target(target)
        elif isinstance(s, ast.AnnAssign):
            self.expr(s.annotation)
            if s.value is not None:
                self.expr(s.value)
                self.target(s.target)
            elif not isinstance(s.target, ast.Name):
                self.expr(s.target)
        elif isinstance(s, ast.AugAssign):
            self.expr(s.value)
            root = _root_name(s.target)
            self.target_reads(s.target)
            if isinstance(s.target, ast.Name):
                self.read(s.target.id)
                self.bind(s.target.id)
            elif root:
                self.mutate(root)
        elif isinstance(s, ast.Delete):
            for target in s.targets:
                self.delete_target(target)
        elif isinstance(s, ast.Import | ast.ImportFrom):
            for alias in s.names:
                if alias.name == "*":
                    self.star_import = True
                else:
                    name = alias.asname or alias.name.split(".")[0]
                    self.bind(name)
                    self.imported.setdefault(name, None)
        elif isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef):
            self.definition_reads(s)
            self.bind(s.name)
            self.nested(s, deferred=True)
        elif isinstance(s, ast.ClassDef):
            self.definition_reads(s)
            self.nested(s, deferred=False)
            self.bind(s.name)
        elif isinstance(s, ast.If):
            self.expr(s.test)
            start = set(self.bound)
            a = self.branch(s.body, start)
            b = self.branch(s.orelse, start)
            self.bound = a & b
        elif isinstance(s, ast.For | ast.AsyncFor):
            self.expr(s.iter)
            start = set(self.bound)
            self.bound = set(start)
            self.target(s.target)
            self.statements(s.body)
            self.branch(s.orelse, start)
            self.bound = start
        elif isinstance(s, ast.While):
            self.expr(s.test)
            start = set(self.bound)
            self.branch(s.body, start)
            self.branch(s.orelse, start)
            self.bound = start
        elif isinstance(s, ast.With | ast.AsyncWith):
            for item in s.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.statements(s.body)
        elif isinstance(s, ast.Try | ast.TryStar):
            start = set(self.bound)
            ok = self.branch(s.body, start)
            ok = self.branch(s.orelse, ok)
            outcomes = [ok]
            for handler in s.handlers:
                self.bound = set(start)
                if handler.type is not None:
                    self.expr(handler.type)
                if handler.name:
                    self.bound.add(handler.name)
                self.statements(handler.body)
                if handler.name:  # Python deletes the name when the handler ends
                    self.bound.discard(handler.name)
                outcomes.append(self.bound)
            after = set.intersection(*outcomes)
            self.bound = set(start)
            before_finally = set(self.bound)
            self.statements(s.finalbody)
            self.bound = after | (self.bound - before_finally)
        elif isinstance(s, ast.Match):
            self.expr(s.subject)
            start = set(self.bound)
            outcomes = []
            for case in s.cases:
                self.bound = set(start)
                self.pattern(case.pattern)
                if case.guard is not None:
                    self.expr(case.guard)
                self.statements(case.body)
                outcomes.append(self.bound)
            last = s.cases[-1].pattern if s.cases else None
            irrefutable = isinstance(last, ast.MatchAs) and last.pattern is None
            if not irrefutable:
                outcomes.append(start)
            self.bound = set.intersection(*outcomes) if outcomes else start
        elif isinstance(s, ast.Global | ast.Nonlocal | ast.Pass | ast.Break | ast.Continue):
            pass
        else:  # Expr, Return, Raise, Assert, ... : only reads
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def definition_reads(self, s: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for dec in s.decorator_list:
            self.expr(dec)
        if isinstance(s, ast.ClassDef):
            for base in [*s.bases, *(k.value for k in s.keywords)]:
                self.expr(base)
            return
        args = s.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.expr(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.expr(arg.annotation)
        if s.returns is not None:
            self.expr(s.returns)

    def pattern(self, pattern: ast.pattern) -> None:
        for node in ast.walk(pattern):
            if isinstance(node, ast.MatchValue):
                self.expr(node.value)
            elif isinstance(node, ast.MatchClass):
                self.expr(node.cls)
            elif isinstance(node, ast.MatchMapping):
                for key in node.keys:
                    self.expr(key)
        for name in _pattern_names(pattern):
            self.bind(name)

    # -- targets
    def target(self, t: ast.expr) -> None:
        if isinstance(t, ast.Name):
            self.bind(t.id)
        elif isinstance(t, ast.Tuple | ast.List):
            for elt in t.elts:
                self.target(elt)
        elif isinstance(t, ast.Starred):
            self.target(t.value)
        else:  # attribute or subscript: mutates the object it hangs off
            self.target_reads(t)
            root = _root_name(t)
            if root:
                self.mutate(root)

    def target_reads(self, t: ast.expr) -> None:
        """Read what an attribute/subscript target evaluates besides its root object."""
        while isinstance(t, ast.Attribute | ast.Subscript):
            if isinstance(t, ast.Subscript):
                self.expr(t.slice)
            t = t.value
        if not isinstance(t, ast.Name):
            self.expr(t)

    def delete_target(self, t: ast.expr) -> None:
        if isinstance(t, ast.Name):
            self.delete(t.id)
        elif isinstance(t, ast.Tuple | ast.List):
            for elt in t.elts:
                self.delete_target(elt)
        else:
            self.target_reads(t)
            root = _root_name(t)
            if root:
                self.mutate(root)

    # -- expressions
    def expr(self, e: ast.AST) -> None:
        if isinstance(e, ast.Name):
            if isinstance(e.ctx, ast.Load):
                self.read(e.id)
            return
        if isinstance(e, ast.NamedExpr):
            self.expr(e.value)
            self.bind(e.target.id)
            return
        if isinstance(e, ast.Lambda):
            for default in [*e.args.defaults, *(d for d in e.args.kw_defaults if d)]:
                self.expr(default)
            self.nested(e, deferred=True)
            return
        if isinstance(e, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            self.expr(e.generators[0].iter)
            self.nested(e, deferred=False)
            for sub in ast.walk(e):
                if isinstance(sub, ast.NamedExpr):
                    self.bind(sub.target.id)
            return
        if isinstance(e, ast.Call):
            self.call(e)
        for child in ast.iter_child_nodes(e):
            self.expr(child)

    def call(self, e: ast.Call) -> None:
        func = e.func
        if not isinstance(func, ast.Attribute):
            return
        if func.attr in MUTATING_METHODS or any(
            k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in e.keywords
        ):
            root = _root_name(func.value)
            if root and root != "get_ipython":
                self.mutate(root)
        index = _EXPANDING_CALLS.get(func.attr)
        is_ipython = (
            isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "get_ipython"
        )
        if index is None or not is_ipython or len(e.args) <= index:
            return
        arg = e.args[index]
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            return
        magic = e.args[0].value if func.attr.startswith("run_") else None  # type: ignore[attr-defined]
        if func.attr == "run_line_magic" and magic in _CODE_MAGICS:
            self.magic_code(arg.value, leaks=magic in {"time", "prun", "debug"})
            return
        for name in _DOLLAR.findall(arg.value):
            self.read(name)
        for text in _BRACES.findall(arg.value):
            try:
                self.expr(ast.parse(text.strip(), mode="eval").body)
            except SyntaxError:
                continue

    def magic_code(self, code: str, leaks: bool) -> None:
        """Analyze the Python argument of ``%time`` / ``%timeit`` / ``%prun``."""
        code = (
            re.sub(r"^(\s*-\S+(\s+\d+)?\s+)*", "", code) if code.lstrip().startswith("-") else code
        )
        try:
            body = _parse(code).body
        except SyntaxError:
            return
        if leaks:
            self.statements(body)
            return
        saved = (set(self.bound), dict(self.outputs), dict(self.deleted), set(self.ever_bound))
        self.statements(body)
        self.bound, self.outputs, self.deleted, self.ever_bound = saved
