"""The Python SDK: `Client` (blocking), `AsyncClient` (asyncio), their typed results and errors."""
from raftqueue.client.async_client import AsyncClient, job_spec
from raftqueue.client.errors import (CommitTimeout, Conflict, Forbidden, NoJobs, NotFound, Overloaded,
                                     PayloadTooLarge, RaftqueueError, Unauthorized, Unavailable, ValidationError)
from raftqueue.client.models import AckResult, ApiKey, Job, JobPage, LeasedJob, Stats, Submitted
from raftqueue.client.sync_client import Client

__all__ = ["AckResult", "ApiKey", "AsyncClient", "Client", "CommitTimeout", "Conflict", "Forbidden", "Job",
           "JobPage", "LeasedJob", "NoJobs", "NotFound", "Overloaded", "PayloadTooLarge", "RaftqueueError",
           "Stats", "Submitted", "Unauthorized", "Unavailable", "ValidationError", "job_spec"]
