"""``beanq``: beanstalkd's command line, then the server.

Only the standard library is imported before the listening socket is bound, so that the port
answers as early as possible; see ``beanq.server`` for the rest of the start-up.
"""

from __future__ import annotations

import sys

from beanq.cli import main

if __name__ == "__main__":
    sys.exit(main())
