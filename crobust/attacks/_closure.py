"""A plain closure as data (private): the arrays a function captures become traced arguments of one cached program.

:func:`lift` turns ``logits_fn`` into ``jax.tree_util.Partial(lifted, leaves)``: ``leaves`` is the list of arrays
the function captures, read now, and ``lifted`` is a hashable description of everything else — the code objects,
the non-array captured values, the pytree structures and the arrays' places. ``lifted(leaves, x)`` rebuilds the
function around ``leaves`` (``types.FunctionType`` with new closure cells, defaults and, where needed, a copy of
the module globals holding the new values) and calls it. A public attack jitted with the Partial as a traced
argument therefore compiles once per description and array shapes/dtypes (jax's own cache key), and every call
runs on the arrays the closure holds at that call: a closure whose cells now hold other arrays reuses the program
with the new values; a closure whose non-array parts changed (another code object, another Python scalar, another
module object) gets its own program.

What is seen, recursively (``Captures`` in the attacks package docstring says the same for users):

- in a Python function (``def``, ``lambda``, nested function): its closure cells, ``__defaults__`` and
  ``__kwdefaults__``; and, when ``logits_fn`` is a plain function (or a ``functools.partial`` of one), for the
  functions defined in its module, the module globals their code names (``co_names`` of the code and of the code
  objects nested in it; a name that also spells an attribute is included harmlessly);
- ``functools.partial`` / ``jax.tree_util.Partial``: the function, ``args`` and ``keywords``;
- a bound method: its function and ``__self__``;
- values: ``jax.Array`` / ``numpy.ndarray`` → traced; containers and registered pytree nodes (tuple, list, dict,
  namedtuple, flax ``FrozenDict``, …) → flattened, each leaf seen again; Python/NumPy scalars, strings, ``None``,
  dtypes → static, keyed by type and value; modules, classes, builtins, ufuncs, callables made by jax transforms
  (``jit``, ``custom_jvp``: anything with ``__wrapped__``) and functions of other modules named as globals →
  static, keyed by identity; other objects with a value-based ``__hash__`` (frozen dataclasses, flax modules) →
  static, keyed by that hash, as jax keys static arguments.

Anything else raises :class:`Unseen` with a reason: an object hashed by identity (its attributes could change
unseen), an empty cell, a function that reaches itself, a callable that is not a function. The caller then
compiles afresh for that call.

The template holds no array: a function whose captures include arrays is rebuilt at trace time, and only a
function without any is kept (to be used as it is), so a cached program never keeps the first call's weights alive.
"""

from __future__ import annotations

import functools
import types
import warnings

import jax
import numpy as np

_ATOMS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis), np.generic, np.dtype)
_BY_IDENTITY = (types.ModuleType, type, types.BuiltinFunctionType, types.BuiltinMethodType, np.ufunc)

LEAF, CONST, SAME, TREE, FUNCTION, PARTIAL, METHOD = "leaf", "const", "same", "tree", "function", "partial", "method"


class Unseen(Exception):
    """``logits_fn`` captures something :func:`lift` cannot pass as data; the message says what."""


class _Same:
    """A static part keyed by identity (holds a strong reference, so the id cannot be reused while keyed)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


class _Example:
    """A value carried in a template but not part of its key: equal to every other ``_Example``."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Example)

    def __hash__(self):
        return 0


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names a code object (and every code object nested in it) looks up outside its locals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


class _Splitter:
    """Splits a value into (template, leaves): the template is hashable, the leaves are arrays in template order."""

    def __init__(self, root_globals: dict):
        self.root_globals = root_globals
        self.leaves: list = []
        self.active: set[int] = set()          # functions being split (a function reaching itself is refused)

    def split(self, value, via_global: bool = False):
        if isinstance(value, (jax.Array, np.ndarray)):
            self.leaves.append(value)
            return (LEAF,)
        if isinstance(value, _ATOMS):
            return (CONST, type(value), value)
        if isinstance(value, types.FunctionType):
            if via_global and value.__globals__ is not self.root_globals:
                return (SAME, _Same(value))    # another module's function named as a global: library code
            return self.function(value)
        # a bound method before the transform test: it forwards ``__wrapped__`` from a decorated function (flax's
        # ``Module.apply``), and ``module.apply`` is a new bound-method object at every attribute access
        if isinstance(value, types.MethodType):
            return (METHOD, self.split(value.__func__), self.split(value.__self__))
        if isinstance(value, _BY_IDENTITY) or hasattr(value, "__wrapped__"):
            return (SAME, _Same(value))
        if isinstance(value, functools.partial):
            return (PARTIAL, type(value), self.split(value.func), self.split(value.args),
                    self.split(value.keywords))
        try:
            children, treedef = jax.tree_util.tree_flatten(value)
        except Exception as error:     # e.g. a dict whose keys cannot be sorted
            raise Unseen(f"captures a {type(value).__name__} that cannot be flattened ({error})") from None
        if not (treedef.num_leaves == 1 and treedef.num_nodes == 1):      # a container or a pytree node
            return (TREE, treedef, tuple(self.split(child) for child in children))
        if type(value).__hash__ not in (object.__hash__, None):
            try:
                hash(value)
            except TypeError as error:
                raise Unseen(f"captures a {type(value).__name__} object that cannot be hashed ({error})") from None
            return (CONST, type(value), value)
        raise Unseen(f"captures a {type(value).__name__} object (hashed by identity: its attributes could change "
                     "unseen)")

    def function(self, fn: types.FunctionType):
        if id(fn) in self.active:
            raise Unseen(f"reaches function {fn.__qualname__} from itself")
        self.active.add(id(fn))
        try:
            cells = []
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
                try:
                    contents = cell.cell_contents
                except ValueError:
                    raise Unseen(f"has an empty closure cell {name!r}") from None
                cells.append(self.split(contents))
            defaults = self.split(fn.__defaults__)
            kwdefaults = self.split(fn.__kwdefaults__)
            names = []
            if fn.__globals__ is self.root_globals:
                g = fn.__globals__
                names = [(n, self.split(g[n], via_global=True)) for n in _global_names(fn.__code__) if n in g]
        finally:
            self.active.discard(id(fn))
        template = (FUNCTION, fn.__code__, _Same(fn.__globals__), fn.__name__, defaults, kwdefaults, tuple(cells),
                    tuple(names))
        # a function without arrays is used as it is when built (kept out of the key; one holding arrays is not
        # kept at all, so a cached program never holds on to the first call's weights)
        return template + (_Example(None if _has_leaf(template) else fn),)


def _has_leaf(template) -> bool:
    tag = template[0]
    if tag == LEAF:
        return True
    if tag in (CONST, SAME):
        return False
    if tag == TREE:
        return any(_has_leaf(c) for c in template[2])
    if tag == FUNCTION:
        defaults, kwdefaults, cells, names = template[4:8]
        return (_has_leaf(defaults) or _has_leaf(kwdefaults) or any(_has_leaf(c) for c in cells)
                or any(_has_leaf(t) for _, t in names))
    if tag == PARTIAL:
        return any(_has_leaf(t) for t in template[2:])
    return _has_leaf(template[1]) or _has_leaf(template[2])            # METHOD


def _build(template, leaves):
    """The value a template describes, with the next entries of the iterator ``leaves`` in the array places."""
    tag = template[0]
    if tag == LEAF:
        return next(leaves)
    if tag == CONST:
        return template[2]
    if tag == SAME:
        return template[1].obj
    if tag == TREE:
        return jax.tree_util.tree_unflatten(template[1], [_build(c, leaves) for c in template[2]])
    if tag == PARTIAL:
        cls, func, args, keywords = template[1:]
        func, args, keywords = _build(func, leaves), _build(args, leaves), _build(keywords, leaves)
        return cls(func, *args, **keywords)
    if tag == METHOD:
        func = _build(template[1], leaves)
        return types.MethodType(func, _build(template[2], leaves))
    code, module, name, defaults, kwdefaults, cells, names, example = template[1:]
    if not _has_leaf(template):
        return example.obj          # no arrays to place: a function of equal template (code and static captures)
    closure = tuple(types.CellType(_build(c, leaves)) for c in cells) or None     # the order of _Splitter.function
    defaults, kwdefaults = _build(defaults, leaves), _build(kwdefaults, leaves)
    overrides = {n: _build(t, leaves) for n, t in names if _has_leaf(t)}
    namespace = {**module.obj, **overrides} if overrides else module.obj
    fn = types.FunctionType(code, namespace, name, defaults, closure)
    fn.__kwdefaults__ = kwdefaults
    return fn


class Lifted:
    """``Lifted(template)(leaves, *args)``: the described callable rebuilt around ``leaves``, called on ``args``.

    Hashable by its template, so it is the static function of a ``jax.tree_util.Partial`` whose traced leaves
    are the captured arrays.
    """

    __slots__ = ("template", "_hash", "__name__")

    def __init__(self, template, name: str):
        self.template = template
        self._hash = hash(template)
        self.__name__ = name

    def __eq__(self, other):
        return isinstance(other, Lifted) and self._hash == other._hash and self.template == other.template

    def __hash__(self):
        return self._hash

    def __call__(self, leaves, *args, **kwargs):
        return _build(self.template, iter(leaves))(*args, **kwargs)

    def __repr__(self):
        return f"Lifted({self.__name__})"


def _innermost(fn):
    """``fn`` through any ``functools.partial`` wrappers."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def root_function(fn):
    """The plain function at the root of ``fn`` (through ``functools.partial`` and a bound method), or None."""
    fn = _innermost(fn)
    fn = fn.__func__ if isinstance(fn, types.MethodType) else fn
    return fn if isinstance(fn, types.FunctionType) else None


def lift(fn) -> jax.tree_util.Partial:
    """``jax.tree_util.Partial(Lifted(template), leaves)`` computing what ``fn`` computes, its arrays as leaves.

    ``fn`` is a plain function, a bound method, or a ``functools.partial`` of one (see the module docstring for
    what is seen). Raises :class:`Unseen` when it is something else or captures something that cannot be passed
    as data.
    """
    root = root_function(fn)
    if root is None:
        raise Unseen(f"is a {type(fn).__name__} object, not a plain function, a bound method or a "
                     "functools.partial of one")
    # module globals are read in a plain function's own module only; a method's function lives with its class
    # (e.g. flax's Module.apply), in library code
    splitter = _Splitter(None if isinstance(_innermost(fn), types.MethodType) else root.__globals__)
    template = splitter.split(fn)
    try:
        lifted = Lifted(template, getattr(root, "__qualname__", "logits_fn"))
    except TypeError as error:      # an unhashable static part, e.g. a pytree node's auxiliary data
        raise Unseen(f"captures a value that cannot be hashed ({error})") from None
    return jax.tree_util.Partial(lifted, splitter.leaves)


class RecompileWarning(UserWarning):
    """An attack's ``logits_fn`` could not be passed as data, so every call compiles afresh (said once per code)."""


_HINTED: set = set()


def _hint_key(fn):
    root = root_function(fn)
    return type(fn) if root is None else root.__code__


def as_data(fn, caller: str):
    """``lift(fn)``, or None after a one-time :class:`RecompileWarning` (per code object) naming the Partial form.

    ``caller`` names the public function in the hint (e.g. ``'crobust.attacks.apgd'``).
    """
    try:
        return lift(fn)
    except Unseen as why:
        key = _hint_key(fn)
        if key not in _HINTED:
            _HINTED.add(key)
            where = getattr(key, "co_filename", None)
            place = f" ({where}:{key.co_firstlineno})" if where else ""
            warnings.warn(
                f"{caller}: logits_fn{place} {why}, which cannot be passed as data, so every call compiles "
                "afresh; pass jax.tree_util.Partial(apply_fn, params) (or a closure over arrays only) to compile "
                "once and reuse the program with new weights", RecompileWarning, stacklevel=3)
        return None
