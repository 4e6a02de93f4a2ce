"""``python -m booking_sessions``: the same as the ``booking-sessions`` console script."""

from booking_sessions.cli import main

main()
