"""`python -m ares_data.testing` starts the fake teacher server (see teacher_server)."""

from .teacher_server import main

main()
