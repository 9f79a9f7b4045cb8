"""`python -m lowkey_daemon ...` is `lowkey-daemon ...` (what the service units run)."""

from .cli import main

raise SystemExit(main())
