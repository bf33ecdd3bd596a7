"""`python -m raykd <command> ...`: the `raykd` command (raykd/commands/__init__.py)."""

from raykd.commands import main

if __name__ == "__main__":
    main()
