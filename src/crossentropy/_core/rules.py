"""The registry of analytic gradient rules: which function differentiates how.

Each differentiable public function registers a *rule* beside its forward code
with :func:`defines_grad`.  A rule takes the function's own arguments plus a
keyword-only ``wrt`` (the names of the arguments to differentiate, empty for
the value alone) and returns ``(value, {name: gradient})`` computed in one
pass; the public function is ``rule(...)[0]``.  :mod:`crossentropy.grad`
looks the rules up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Rule", "defines_grad", "differentiable_functions", "forward_of", "rule_of"]


@dataclass(frozen=True)
class Rule:
    """A registered rule and the argument names it can differentiate."""

    rule: Callable
    differentiable: tuple[str, ...]


_RULES: dict[Callable, Rule] = {}


def defines_grad(forward: Callable, *differentiable: str) -> Callable[[Callable], Callable]:
    """Register the decorated rule as the gradient of ``forward``.

    ``differentiable`` names the arguments the rule can differentiate.
    """

    def register(rule: Callable) -> Callable:
        _RULES[forward] = Rule(rule, differentiable)
        return rule

    return register


def rule_of(fn: Callable) -> Rule | None:
    """The rule registered for ``fn``, or ``None``."""
    return _RULES.get(fn)


def forward_of(rule: Callable) -> tuple[Callable, Rule] | None:
    """``(function, registration)`` of a registered ``rule``, or ``None``."""
    return next(((f, r) for f, r in _RULES.items() if r.rule is rule), None)


def differentiable_functions() -> list[str]:
    """``module.name`` of every function with a rule, sorted (for error messages)."""
    return sorted(f.__module__.split(".")[-1] + "." + f.__name__ for f in _RULES)
