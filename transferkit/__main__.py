"""``python -m transferkit``: the CLI, as ``accelerate launch -m transferkit fit ...`` starts it in each process."""
from transferkit.cli import main

if __name__ == "__main__":
    main()
