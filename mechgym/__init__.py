"""mechgym: repeated games whose payoffs come from a mechanism, played by learning agents."""

__version__ = "0.1.0"
