"""The interface every search space implements (``space=`` in the config), so that every
strategy walks every space the same way and the search loop, the store, re-evaluation, the
loggers and the reports never ask which space they serve.

A space's architectures (an NSC :class:`~blockqnn.space.nsc.Block`, a NAS-Bench-201
:class:`~blockqnn.space.nb201.Cell`) share one small surface: ``key`` (the canonical key the
store dedupes by), ``to_list()`` / ``to_json()`` (the JSON form stored in the ``nsc`` column and
sent to evaluators), ``compact()`` (one line for tables and logs), ``labels()`` (extra names in best_block.json) and
``parts()`` (its layer kinds or ops); :func:`blockqnn.space.registry.draw_arch` draws either.

The space itself, after NASLib's search-space interface: ``parse`` (validation and the text
forms), ``sample`` (uniform), ``mutate`` (one random change, never the parent), ``neighbours``
(every one-change architecture), and the sequential decision process the step-wise agents
(Q-learning, TPE) walk: ``actions(step)`` lists the legal decisions at a step, ``ends(step,
action)`` says whether the architecture is complete after it, ``build(actions)`` makes the
architecture of a finished walk and ``decisions(arch)`` gives an architecture's walk back.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol


class Architecture(Protocol):
    """What the loop, the store and the outputs use of an architecture."""

    @property
    def key(self) -> str: ...

    def to_list(self) -> list: ...

    def to_json(self) -> str: ...

    def compact(self) -> str: ...


Action = tuple[int, ...]


class SearchSpace(ABC):
    """A search space: its encoding, canonical key, validity rules, decision process and
    drawing (module docstring)."""

    #: The name of the space (``space.name`` in the config, the registry's key).
    name = "space"
    #: The most decisions a walk takes (NSC: the layers and the Terminal; NB201: 6 edges).
    max_steps = 1
    #: Whether an architecture is stacked into a network the config describes (NSC blocks;
    #: NB201's networks are fixed by its tables): best_network.png is drawn then.
    has_network = False

    # ------------------------------------------------------------------ encoding
    @abstractmethod
    def parse(self, obj: Any) -> Architecture:
        """An architecture from its JSON text or list form (or an architecture of this space);
        an invalid one raises :class:`blockqnn.errors.BlockError` naming what is wrong."""

    def claims(self, obj: Any) -> bool:
        """Whether ``obj`` (a stored ``nsc`` value) is in this space's form."""
        try:
            self.parse(obj)
        except Exception:  # noqa: BLE001  any refusal: not this space's
            return False
        return True

    # ------------------------------------------------------------------ sampling
    @abstractmethod
    def sample(self, rng: random.Random) -> Architecture:
        """A random architecture (what random search and epsilon = 1 draw)."""

    @abstractmethod
    def mutate(self, arch: Architecture, rng: random.Random) -> Architecture:
        """One random change of ``arch`` (regularized evolution's mutation); never ``arch``."""

    @abstractmethod
    def neighbours(self, arch: Architecture) -> list[Architecture]:
        """Every architecture one change away."""

    # ------------------------------------------------------------------ decision process
    @abstractmethod
    def actions(self, step: int) -> tuple[Action, ...]:
        """The legal decisions at ``step`` (0-based). In both spaces they depend on the step
        only (a later decision's legality never depends on what was chosen before)."""

    def action_groups(self, step: int) -> tuple[tuple[Action, ...], ...]:
        """The legal decisions at ``step`` in groups of one kind (Q-learning's ``type_first``
        exploration draws a group, then a member); by default each its own group."""
        return tuple((a,) for a in self.actions(step))

    def normal_action(self, step: int, action: Action) -> Action:
        """``action`` in the form :meth:`actions` lists it (NSC: an add's or concat's inputs
        in increasing order)."""
        return tuple(action)

    @abstractmethod
    def ends(self, step: int, action: Action) -> bool:
        """Whether the walk is complete after ``action`` at ``step``."""

    @abstractmethod
    def build(self, actions: Sequence[Action]) -> Architecture:
        """The architecture of a finished walk."""

    @abstractmethod
    def decisions(self, arch: Architecture) -> tuple[Action, ...]:
        """The walk that builds ``arch`` (``build(decisions(a))`` is ``a``)."""

    # ------------------------------------------------------------------ description
    def fingerprint(self) -> dict[str, Any]:
        """What a resume must match about the space."""
        return {"space": self.name}

    def describe(self) -> str:
        """A few words for the start-up panel."""
        return self.name

    def state_dict(self) -> dict[str, Any]:
        """The space's settings saved with an agent's state."""
        return {}
