"""``python -m service`` is the ``diachiso`` command."""

from service.cli import main

main()
