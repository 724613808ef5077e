"""``python -m transferkit.cli``: the same CLI as the console script (benchmarks start the server this way)."""
from transferkit.cli import main

if __name__ == "__main__":
    main()
