"""p2p tests: route py-libp2p's logs through logging so pytest captures them (importing
libp2p detaches its loggers, and their warnings would go straight to stderr)."""

from __future__ import annotations

import logging

import libp2p  # noqa: F401  (its import resets the "libp2p" logger; undo that after it)

logging.getLogger("libp2p").propagate = True
