"""Whether files from users may be unpickled (``--trust-pickle``); off unless asked for.

``torch.load`` of a pickle runs whatever code its author put in it, so sftune reads
user-supplied ``.pth``/``.pt``/``.bin``/``.ckpt`` files with ``weights_only=True``
(tensors and plain containers only). ``--trust-pickle`` (``trusting_pickles()``)
lifts that for one run, for files from a source the user trusts. A context
variable rather than a config key: the permission must be given on each command,
never inherited from a config.yaml someone else wrote.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_TRUST_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("sftune_trust_pickle", default=False)


@contextlib.contextmanager
def trusting_pickles(enabled: bool = True) -> Iterator[None]:
    """Within this block, user weight files may be fully unpickled (``enabled``)."""
    token = _TRUST_PICKLE.set(enabled)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def pickles_trusted() -> bool:
    return _TRUST_PICKLE.get()
