"""``JobService``: translates job requests to runtime calls and records back to messages.

No rules live here: validation is the job spec's and the core's, ordering and durability the
runtime's, errors the interceptor's (:mod:`scheduler.api.errors`). Who may act on which job is
the policy's (:mod:`scheduler.api.auth`): the user of a new job is the caller (an operator may
name another user, and the audit trail records who submitted it), and users see, watch and
cancel only their own jobs.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from firsthop.v1 import jobs_pb2, jobs_pb2_grpc
from scheduler import limits
from scheduler.api.auth import current_identity, note_resource, require_job_access
from scheduler.api.cluster_serde import explanation_to_proto
from scheduler.api.forecast import (
    WAITING_STATES,
    Forecaster,
    forecast_info_to_proto,
    start_estimate_to_proto,
)
from scheduler.api.job_pages import JobPages
from scheduler.api.serde import job_to_proto
from scheduler.api.spec_serde import job_spec_from_proto, job_state_from_proto
from scheduler.core.errors import DuplicateSubmissionError
from scheduler.core.events import Event, JobCancelRequested, JobSubmitted
from scheduler.core.records import Job
from scheduler.runtime.queries import Page
from scheduler.runtime.requests import AgentRequests
from scheduler.runtime.runtime import Runtime
from scheduler.security.policy import Denial, submitting_user
from scheduler.security.principals import (
    AccessDeniedError,
    UnauthenticatedError,
    check_user_name,
)

Context = grpc.aio.ServicerContext[Any, Any]

_log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """The JobService over one runtime."""

    def __init__(
        self,
        runtime: Runtime,
        requests: AgentRequests | None = None,
        forecaster: Forecaster | None = None,
    ) -> None:
        self._runtime = runtime
        self._requests = requests or AgentRequests(runtime)
        self._forecaster = forecaster or Forecaster(runtime)
        self._pages = JobPages(live=lambda: runtime.state.jobs)

    async def SubmitJob(  # noqa: N802 - gRPC method name
        self, request: jobs_pb2.SubmitJobRequest, context: Context
    ) -> jobs_pb2.SubmitJobResponse:
        user = _submitting_user(limits.check_user(request.user))
        submission_id = limits.check_id("submission_id", request.submission_id) or None
        spec = job_spec_from_proto(request.spec)
        limits.require_command(spec.command)
        job_id = self._runtime.new_job_id()
        earlier = await self._runtime.stored_submission(user, submission_id)
        if earlier is not None:  # a repeat of a job only the store still has
            if earlier.spec != spec:
                raise DuplicateSubmissionError(
                    f"submission id {submission_id!r} was used for job {earlier.id} "
                    "with a different spec"
                )
            return jobs_pb2.SubmitJobResponse(
                job=job_to_proto(earlier, self._runtime.now()), created=False
            )

        def submitted(at: Any) -> Event:
            return JobSubmitted(
                at=at, job_id=job_id, spec=spec, user=user, submission_id=submission_id
            )

        job = await self._runtime.apply(submitted, self._job_for)
        if job is None:  # pragma: no cover - apply returns the result
            raise RuntimeError("submission produced no job")
        note_resource(f"job {job.id} for {job.user}")
        return jobs_pb2.SubmitJobResponse(
            job=job_to_proto(job, self._runtime.now()), created=job.id == job_id
        )

    def _job_for(self, event: Event) -> Job:
        if not isinstance(event, JobSubmitted):  # pragma: no cover - only used for those
            raise TypeError(f"not a submission: {event!r}")
        return self._runtime.core.job_for(event)

    async def GetJob(  # noqa: N802
        self, request: jobs_pb2.GetJobRequest, context: Context
    ) -> jobs_pb2.GetJobResponse:
        job = await self._runtime.find_job(request.job_id)
        require_job_access(job.user, job.id)
        return jobs_pb2.GetJobResponse(job=job_to_proto(job, self._runtime.now()))

    async def ListJobs(  # noqa: N802
        self, request: jobs_pb2.ListJobsRequest, context: Context
    ) -> jobs_pb2.ListJobsResponse:
        states = [job_state_from_proto(s) for s in request.states]
        user = limits.check_user(request.user)
        identity = current_identity()
        if identity is not None and not identity.is_operator:
            require_job_access(user or identity.name)
            user = identity.name

        async def fetch(page_size: int) -> Page[Job]:
            return await self._runtime.list_jobs(
                states=states,
                queue=request.queue,
                user=user,
                page_size=page_size,
                page_token=request.page_token,
            )

        return await self._pages.answer(
            fetch, request.page_size, self._runtime.now, limits.MAX_LIST_RESPONSE_BYTES
        )

    async def CancelJob(  # noqa: N802
        self, request: jobs_pb2.CancelJobRequest, context: Context
    ) -> jobs_pb2.CancelJobResponse:
        job_id, reason = request.job_id, limits.check_reason(request.reason)
        graceful = request.graceful
        known = await self._runtime.find_job(job_id)  # unknown_job before queueing anything
        require_job_access(known.user, job_id)
        if job_id not in self._runtime.state.jobs:  # finished long ago: nothing to cancel
            return jobs_pb2.CancelJobResponse(job=job_to_proto(known, self._runtime.now()))

        def cancelled(at: Any) -> Event:
            return JobCancelRequested(at=at, job_id=job_id, reason=reason, graceful=graceful)

        job = await self._runtime.apply(cancelled, lambda _: self._runtime.get_job(job_id))
        if job is None:  # pragma: no cover - apply returns the result
            raise RuntimeError("cancel produced no job")
        return jobs_pb2.CancelJobResponse(job=job_to_proto(job, self._runtime.now()))

    async def WatchJob(  # noqa: N802
        self, request: jobs_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.WatchJobResponse]:
        watch = self._runtime.watchers.subscribe(request.job_id)
        try:
            first = await self._runtime.find_job(request.job_id)
            require_job_access(first.user, first.id)
            async for job in watch.updates(first):
                yield jobs_pb2.WatchJobResponse(job=job_to_proto(job, self._runtime.now()))
        finally:
            watch.close()

    async def ExplainJob(  # noqa: N802
        self, request: jobs_pb2.ExplainJobRequest, context: Context
    ) -> jobs_pb2.ExplainJobResponse:
        runtime = self._runtime
        now = runtime.now()
        job = runtime.get_job(request.job_id)
        require_job_access(job.user, job.id)
        explanation = runtime.core.explain(request.job_id, now)
        response = explanation_to_proto(explanation, job, now)
        if job.state in WAITING_STATES and not request.skip_forecast:
            await self._add_estimate(response, job)
        return response

    async def _add_estimate(self, response: jobs_pb2.ExplainJobResponse, job: Job) -> None:
        """The job's estimated start, from the cached forecast or a fresh one if the job is
        newer than it. A forecast that fails leaves the explanation without an estimate (and
        says so in its details): explaining must not depend on the simulator."""
        try:
            answer = await self._forecaster.answer()
            if job.id not in answer.forecast.starts:
                answer = await self._forecaster.answer(newer_than=job.updated_at)
        except Exception:
            _log.exception("forecast for explaining %s failed", job.id)
            response.details.append("estimated start: unavailable (the forecast failed)")
            return
        if job.id not in answer.forecast.starts:
            return  # it started or ended meanwhile: the explanation above is older than that
        estimate = start_estimate_to_proto(answer, job.id, answer.positions[job.id])
        response.start_estimate.CopyFrom(estimate)
        response.forecast.CopyFrom(forecast_info_to_proto(answer, self._runtime.now()))

    async def GetJobLogs(  # noqa: N802
        self, request: jobs_pb2.GetJobLogsRequest, context: Context
    ) -> jobs_pb2.GetJobLogsResponse:
        job = await self._runtime.find_job(request.job_id)
        require_job_access(job.user, job.id)
        read = await self._requests.read_log(
            request.job_id, request.rank, offset=request.offset, max_bytes=request.max_bytes
        )
        return jobs_pb2.GetJobLogsResponse(
            host=read.host, attempt=read.attempt, offset=read.offset, size=read.size, data=read.data
        )


def _submitting_user(requested: str) -> str:
    """The user a new job is recorded under (the caller's identity; see the module docstring).

    Raises:
        UnauthenticatedError: no caller (a servicer used without the interceptor).
        AccessDeniedError: a user naming someone else (``not_your_job``).
    """
    identity = current_identity()
    if identity is None:
        raise UnauthenticatedError("credentials are required", reason=Denial.UNAUTHENTICATED)
    if requested:
        check_user_name(requested)
    try:
        return submitting_user(identity, requested) or ANONYMOUS
    except PermissionError as exc:
        raise AccessDeniedError(str(exc), reason=Denial.NOT_YOUR_JOB) from None
