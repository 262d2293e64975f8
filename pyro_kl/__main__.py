"""``python -m pyro_kl demo`` and ``python -m pyro_kl gallery`` (see :mod:`pyro_kl.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
