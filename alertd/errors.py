"""Every error alertd raises on purpose, in one place."""


class AlertdError(Exception):
    """Base class of the errors below; never raised itself."""


class ConfigError(AlertdError):
    """Raised by `Config.from_environ` when a setting is missing, malformed or out of range."""

    def __init__(self, variable: str, value: str, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is invalid: expected {accepted}")


class InvalidEventError(AlertdError):
    """Raised when an ingest body is not valid JSON/NDJSON or an event in it breaks a field rule."""

    def __init__(self, code: str, detail: str, index: int | None = None) -> None:
        self.code = code
        self.detail = detail
        self.index = index
        super().__init__(detail if index is None else f"item {index}: {detail}")


class ListenError(AlertdError):
    """Raised at startup when a listener cannot bind its configured address."""

    def __init__(self, variable: str, address: str, reason: str) -> None:
        self.variable = variable
        super().__init__(f"cannot listen on {variable}={address}: {reason}")


class RulesError(AlertdError):
    """Raised when a rules file (ALERTD_RULES_FILE) cannot be read, is not TOML, or breaks a rule of its shape."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}: {reason}" if line is None else f"{path}:{line}: {reason}")


class InvalidSilenceError(AlertdError):
    """Raised when a silence request (`POST /v1/silences`) is malformed; `field` names the bad field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field} {reason}")


class SilenceLimitError(AlertdError):
    """Raised when a new silence would exceed the number of active silences a store holds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"there are already {limit} active silences (the limit); expire some first")


class StateError(AlertdError):
    """Raised when a state file (ALERTD_STATE_FILE) is not a valid alertd snapshot: not JSON, or a wrong shape."""


class BackendUnavailableError(AlertdError):
    """Raised when the shared store (Redis, in cluster mode) did not answer in time or refused a silences call."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)
