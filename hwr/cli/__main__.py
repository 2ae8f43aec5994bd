import sys

from hwr.cli import main

if __name__ == "__main__":  # a spawned child (hwr.tune.pool) imports this module without running it
    sys.exit(main())
