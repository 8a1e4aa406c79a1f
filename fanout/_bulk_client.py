"""The bulk-job methods of ``fanout.Fanout`` (``bulk_cancel``, ``bulk_replay``,
``bulk_job``, ``bulk_jobs``, ``cancel_bulk_job``): a mixin the client inherits, so that
``fanout/_client.py`` stays short. The jobs themselves: ``fanout/_celery/bulk_jobs.py``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._celery import bulk_jobs
from ._core.flow import as_timestamp
from ._errors import ConfigError
from ._redis.audit import operator_name
from ._redis.bulk_store import BulkJob, BulkQuery, BulkStore

if TYPE_CHECKING:
    from ._celery.runtime import Runtime
    from ._core.function import FunctionDef


class BulkMethods:
    """Bulk cancel and replay by query, run on the workers (docs/howto/bulk-actions.md)."""

    if TYPE_CHECKING:
        _rt: Runtime

        def _function(self, function: Callable[..., Any] | str) -> FunctionDef: ...

    def bulk_cancel(self, function: Callable[..., Any] | str | None = None, *,
                    status: str | None = "active", since: Any = None, until: Any = None,
                    version: str | None = None, search: Mapping[str, Any] | None = None,
                    event_name: str | None = None,
                    reason: str = "cancelled by bulk_cancel", by: str | None = None,
                    dry_run: bool = False, batch: int = bulk_jobs.DEFAULT_BATCH) -> BulkJob:
        """Cancel every run matching the filters (default: the active ones), in batches
        on the workers; returns the job (:meth:`bulk_job` shows its progress). The
        filters are those of :meth:`list_runs`, exact from the indexes; the job acts
        on the runs that match now (``event_name``: the runs started by an event of that
        name, a batch run by any of its events). ``dry_run=True`` only counts them (``total``) and
        returns the first ids (``sample``). The job goes into the audit log under
        ``by`` (default ``python:<user>@<host>``) with ``reason``."""
        return self._bulk("cancel", function, status, since, until, version, search,
                          event_name, False, reason, by, dry_run, batch)

    def bulk_replay(self, function: Callable[..., Any] | str | None = None, *,
                    status: str | None = None, since: Any = None, until: Any = None,
                    version: str | None = None, search: Mapping[str, Any] | None = None,
                    event_name: str | None = None, include_replays: bool = False,
                    reason: str = "", by: str | None = None,
                    dry_run: bool = False, batch: int = bulk_jobs.DEFAULT_BATCH) -> BulkJob:
        """Replay the runs matching the filters, in batches on the workers: the latest
        run of each event, once, never a replay unless ``include_replays`` (the others
        count as ``skipped``). Otherwise as :meth:`bulk_cancel`."""
        return self._bulk("replay", function, status, since, until, version, search,
                          event_name, include_replays, reason, by, dry_run, batch)

    def _bulk(self, kind: str, function: Callable[..., Any] | str | None, status: str | None,
              since: Any, until: Any, version: str | None, search: Mapping[str, Any] | None,
              event_name: str | None, include_replays: bool, reason: str, by: str | None,
              dry_run: bool, batch: int) -> BulkJob:
        if event_name is not None and (not isinstance(event_name, str) or not event_name):
            raise ConfigError("event_name must be an event's name (a non-empty string)")
        if function is None and not (status or since or until or version or search
                                     or event_name):
            raise ConfigError(f"bulk_{kind} needs a filter: a function, status, since, until, "
                              "version, search or event_name")
        query = BulkQuery(fn_key=self._function(function).key if function is not None else None,
                          status=status or None, since=as_timestamp(since, "since"),
                          until=as_timestamp(until, "until"), version=version or None,
                          search=dict(search or {}), include_replays=include_replays,
                          event_name=event_name)
        return bulk_jobs.submit(self._rt, kind, query, who=by or operator_name("python"),
                                reason=reason, client="python", dry_run=dry_run, batch=batch)

    def bulk_job(self, job_id: str) -> BulkJob | None:
        """A bulk job and its progress; None when unknown or past the retention."""
        return BulkStore(self._rt.store).get(job_id)

    def bulk_jobs(self, limit: int = 50) -> list[BulkJob]:
        """The bulk jobs, newest first."""
        return BulkStore(self._rt.store).jobs(limit)

    def cancel_bulk_job(self, job_id: str, *, reason: str = "",
                        by: str | None = None) -> BulkJob | None:
        """Stop a bulk job after its current batch; returns it (None when unknown). The
        runs it handled stay handled, the others are left alone, and the job's state is
        ``cancelled``. The stop goes into the audit log under ``by`` (default
        ``python:<user>@<host>``) with ``reason``; a job that had ended is left as it is."""
        job, _stopped = bulk_jobs.cancel(self._rt, job_id, who=by or operator_name("python"),
                                         reason=reason, client="python")
        return job


__all__ = ["BulkMethods"]
