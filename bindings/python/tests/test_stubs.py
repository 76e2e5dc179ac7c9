"""The type stubs list every field the core has (so editors complete the new ones)."""

import ast
from pathlib import Path

import safestep
from safestep import LayerScheduler, NoiseStats, SchedulerConfig

STUB = Path(safestep.__file__).with_name("_safestep.pyi")


def _class(tree, name):
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"no class {name} in the stub")


def _annotated(cls):
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]


def test_stub_lists_every_config_field_with_its_default():
    tree = ast.parse(STUB.read_text())
    cls = _class(tree, "SchedulerConfig")
    assert _annotated(cls)[1:] == list(SchedulerConfig.FIELDS)  # [0] is FIELDS
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = [a.arg for a in init.args.kwonlyargs]
    defaults = [ast.literal_eval(d) for d in init.args.kw_defaults]
    assert dict(zip(names, defaults)) == SchedulerConfig().to_dict()


def test_stub_lists_every_report_field():
    tree = ast.parse(STUB.read_text())
    s = LayerScheduler(None, 1e-3)
    r = s.observe(0.1, 1.0, NoiseStats.from_variance(1.0, 1.0, 8))
    assert _annotated(_class(tree, "Report")) == list(r.to_dict())


def test_py_typed_is_shipped():
    assert STUB.with_name("py.typed").exists()
