"""``python -m ssl_biases.cli``: the ``ssl-biases`` command."""

from ssl_biases.cli import main

main()
