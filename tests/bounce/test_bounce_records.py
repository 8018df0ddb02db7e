"""The analyzer's records (model.Record) behave as the frozen dataclasses they replace."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.classify import Rule
from hurricane.bounce.evidence import Evidence
from hurricane.bounce.model import Analysis, RecipientResult, Record, ReplyClass, replace

RECORDS: tuple[type[Record], ...] = (ReplyClass, RecipientResult, Analysis, AnalysisLimits,
                                     Evidence, Rule)


def _reference(cls: type[Record]) -> type:
    """``@dataclass(frozen=True)`` over the same fields, as the class was declared before."""
    spec = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            spec.append((f.name, f.type, dataclasses.field(default=f.default)))
        else:
            spec.append((f.name, f.type))
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=True)


def _values(cls: type[Record], salt: str) -> dict[str, object]:
    return {f.name: "%s-%s-%d" % (f.name, salt, n) for n, f in enumerate(dataclasses.fields(cls))}


class RecordTests(SynchronousTestCase):

    def test_init_signature(self) -> None:
        """The written-out __init__ takes what the generated one took, defaults included."""
        for cls in RECORDS:
            ours = list(inspect.signature(cls.__init__).parameters.values())
            ref = list(inspect.signature(_reference(cls).__init__).parameters.values())
            self.assertEqual([(p.name, p.kind, p.default, p.annotation) for p in ours],
                             [(p.name, p.kind, p.default, p.annotation) for p in ref], cls)

    def test_repr_eq_hash(self) -> None:
        for cls in RECORDS:
            ref = _reference(cls)
            vals = _values(cls, "a")
            a, r = cls(**vals), ref(**vals)
            self.assertEqual(repr(a), repr(r))
            self.assertEqual(hash(a), hash(r))
            self.assertEqual(a, cls(*vals.values()))
            self.assertNotEqual(a, cls(**_values(cls, "b")))
            self.assertIs(a.__eq__(r), NotImplemented)
            self.assertEqual(dataclasses.asdict(a), dataclasses.asdict(r))
            self.assertEqual(pickle.loads(pickle.dumps(a)), a)
            name = dataclasses.fields(cls)[-1].name
            self.assertEqual(dataclasses.replace(a, **{name: "x"}), cls(**{**vals, name: "x"}))
            got = replace(a, **{name: "x"})
            self.assertEqual((type(got), got, list(vars(got).items())),
                             (cls, cls(**{**vals, name: "x"}),
                              list(vars(cls(**{**vals, name: "x"})).items())))
            self.assertEqual(a, cls(**vals))    # (unchanged)
            with self.assertRaises(TypeError):
                replace(a, no_such_field="x")

    def test_frozen(self) -> None:
        for cls in RECORDS:
            a, r = cls(**_values(cls, "a")), _reference(cls)(**_values(cls, "a"))
            for obj in (a, r):
                with self.assertRaises(dataclasses.FrozenInstanceError) as cm:
                    obj.reason = "x"    # type: ignore[misc]
                with self.assertRaises(dataclasses.FrozenInstanceError) as cm2:
                    del obj.reason      # type: ignore[misc]
                self.assertEqual((str(cm.exception), str(cm2.exception)),
                                 ("cannot assign to field 'reason'",
                                  "cannot delete field 'reason'"))
