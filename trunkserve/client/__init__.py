"""Python client for a trunkserve deployment: ``TrunkserveClient`` and ``python -m trunkserve.client``."""

from .api import ClientError, InvalidInput, ServerError, ServerUnreachable, TrunkserveClient, UnknownTask

__all__ = ["TrunkserveClient", "ClientError", "InvalidInput", "ServerError", "ServerUnreachable", "UnknownTask"]
