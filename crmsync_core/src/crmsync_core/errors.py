"""Every exception crmsync raises, under one root.

::

    CrmsyncError
    ├── ConfigurationError            settings are missing or wrong; fix them and run again
    │   └── AdapterNotInstalledError  no adapter registered under that CRM name
    ├── InvalidRequestError           bad input to a queue operation (unknown filter, malformed id, ...)
    ├── IllegalTransitionError        the status machine refused a state change
    ├── StoreError                    the database failed or does not have the expected layout
    │   └── DatabaseUnavailableError  the database cannot be reached
    └── AdapterError                  raised by adapters while talking to a CRM
        ├── TransientError            worth retrying later (timeout, 5xx, 429, malformed answer)
        │   └── MalformedResponseError
        ├── PermanentError            the CRM rejected this contact's data; retrying will not help
        └── FatalError                the whole run for this CRM must stop (bad key, unknown list)
            ├── AuthenticationError
            ├── RateLimitExhaustedError  a budget that resets later (e.g. HubSpot's daily limit)
            └── CircuitOpenError         the CRM keeps failing: paused, probed again after a cool-down

Each class's docstring is its default message. Messages never contain secrets: adapters pass secrets to
:class:`crmsync_core.http.CrmClient`, which redacts them from everything it raises.
"""

from __future__ import annotations


class CrmsyncError(Exception):
    """crmsync failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(CrmsyncError):
    """crmsync is not configured correctly."""


class AdapterNotInstalledError(ConfigurationError):
    """No adapter is installed for that CRM."""


class InvalidRequestError(CrmsyncError, ValueError):
    """The request is malformed."""


class IllegalTransitionError(CrmsyncError):
    """The status machine does not allow this state change."""


class StoreError(CrmsyncError):
    """The database operation failed."""


class DatabaseUnavailableError(StoreError):
    """The database cannot be reached."""


class AdapterError(CrmsyncError):
    """The CRM call failed."""


class TransientError(AdapterError):
    """The CRM call failed for a reason that may go away; it will be retried later."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedResponseError(TransientError):
    """The CRM answered with something that is not what its API documents."""


class PermanentError(AdapterError):
    """The CRM rejected the contact; retrying the same data will not help."""


class FatalError(AdapterError):
    """The CRM refused the whole run; fix the configuration and run again."""


class AuthenticationError(FatalError):
    """The CRM rejected the credentials."""


class RateLimitExhaustedError(FatalError):
    """The CRM's request budget is used up until it resets."""

    def __init__(self, message: str | None = None, *, resume_after: float) -> None:
        super().__init__(message)
        self.resume_after = resume_after


class CircuitOpenError(FatalError):
    """The CRM keeps failing (connection errors, timeouts, 5xx): it is paused until a probe succeeds.

    Contacts whose requests were not answered go back to the queue without an attempt counted.
    ``resume_after`` is the cool-down in seconds before the next probe.
    """

    def __init__(self, message: str | None = None, *, resume_after: float = 0.0) -> None:
        super().__init__(message)
        self.resume_after = resume_after
