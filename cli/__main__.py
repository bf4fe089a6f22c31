"""`python -m cli` is `stt`."""

from cli.main import main

main()
