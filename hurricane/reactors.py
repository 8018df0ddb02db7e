"""The reactor, typed by what each part of Hurricane asks of it.

Twisted describes a reactor as a set of interfaces (``IReactorTime``,
``IReactorTCP``...), so a part that needs two of them has no single Twisted
type to name. The interfaces below combine exactly what each part calls, as
Synapse's ``ISynapseReactor`` does; a parameter is typed with the narrowest
one (STYLE habit 22), never ``Any``:

- :class:`IRunningReactor`: start-up hooks and a stop from any thread (the
  signal handlers of ``tap.py``);
- :class:`IStoreReactor`: a store engine and the operations on it (the
  ``hurricane`` commands): time, the reactor's life cycle (the SQLite pool
  starts and stops with it) and calls back from the pool's threads;
- :class:`IConsoleReactor`: the SSH console (listen, time its scripts,
  check passwords in a thread pool);
- :class:`IClientReactor`: outgoing HTTP and SMTP (webhooks, the sink's
  returns): TCP and TLS connections, timeouts;
- :class:`IResolverReactor`: the DNS client (UDP and TCP queries, timeouts);
- :class:`IAnalysisReactor`: the bounce analysis executors (worker processes
  under deadlines, or a thread pool that calls back);
- :class:`IServerReactor`: the whole server, all of the above plus UNIX
  sockets (a listener may be ``unix:``).

Interfaces a part needs alone are Twisted's own (``IReactorTime``,
``IReactorFromThreads``, ``IReactorCore``).

Tests pass ``MemoryReactorClock`` or ``task.Clock`` where these are asked for
(those are not type-checked). Code that holds the global reactor (``tap.py``)
narrows it once with :func:`server_reactor`, which checks that it really
provides every interface instead of casting blindly.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFromThreads,
    IReactorProcess,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
    IReactorUNIX,
)
from zope.interface.interface import InterfaceClass

__all__ = ["IAnalysisReactor", "IClientReactor", "IConsoleReactor", "IResolverReactor",
           "IRunningReactor", "IServerReactor", "IStoreReactor", "missing_interfaces",
           "server_reactor"]


class IRunningReactor(IReactorCore, IReactorFromThreads):
    """The reactor's life cycle, driven from any thread (start-up hooks, a stop from a
    signal handler or a pool's thread)."""


class IStoreReactor(IReactorTime, IRunningReactor):
    """What a store engine and the operations on it need."""


class IConsoleReactor(IReactorTCP, IReactorTime, IReactorThreads):
    """What the SSH console needs (its passwords are checked in the reactor's pool)."""


class IClientReactor(IReactorTCP, IReactorSSL, IReactorTime):
    """What outgoing connections need (webhooks over HTTP(S), SMTP clients)."""


class IResolverReactor(IReactorUDP, IReactorTCP, IReactorTime):
    """What ``twisted.names.client.Resolver`` needs."""


class IAnalysisReactor(IReactorProcess, IReactorTime, IReactorFromThreads):
    """What the bounce analysis executors need: worker processes and their deadlines,
    or results called back from a thread pool."""


class IServerReactor(IStoreReactor, IConsoleReactor, IClientReactor, IResolverReactor,
                     IAnalysisReactor, IReactorUNIX):
    """Everything the server asks of its one reactor."""


def missing_interfaces(reactor: object, wanted: InterfaceClass) -> list[str]:
    """The Twisted reactor interfaces within ``wanted`` that ``reactor`` does not provide."""
    return [iface.__name__ for iface in wanted.__iro__
            if iface.__module__ == IReactorTime.__module__ and not iface.providedBy(reactor)]


def server_reactor(reactor: object) -> IServerReactor:
    """``reactor`` typed as :class:`IServerReactor`, after checking that it is one.

    Raises:
        TypeError: naming the interfaces it lacks.
    """
    missing = missing_interfaces(reactor, IServerReactor)
    if missing:
        raise TypeError(f"{type(reactor).__name__} does not provide {', '.join(missing)}")
    return cast(IServerReactor, reactor)
