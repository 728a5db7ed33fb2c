"""A plugin module whose SDK is missing, for the registry's error message."""

import lethe_sdk_that_does_not_exist  # noqa: F401
