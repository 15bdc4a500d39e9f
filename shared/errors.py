"""The one root exception; each package raises subclasses and edges translate them."""


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""


class ConfigError(TierflowError):
    """A setting is missing or wrong."""


class PolicyInvalid(TierflowError):
    """A policy document failed validation; `problems` lists every (path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = problems


class BrokerUnavailable(TierflowError):
    """The broker did not acknowledge in time; the write may or may not exist."""
