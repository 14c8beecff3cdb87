"""A deliberately simple reference model of the job store: dicts, scans and a sort on every call.

It implements the contract of raftqueue/store/commands.py independently of the indexed store, so that the
two can be fed the same random commands and must give the same answers. Slow on purpose; tests only.
"""
from __future__ import annotations

import copy

from raftqueue.store.backoff import retry_delay_ms

TERMINAL = ("ACKED", "DEAD", "CANCELLED")
STATES = ("SCHEDULED", "READY", "RUNNING", "RETRY", "ACKED", "DEAD", "CANCELLED")
KINDS = {"submit", "submit_batch", "lease", "ack", "ack_batch", "nack", "release", "extend", "cancel", "retry", "retry_dead",
         "pause_queue", "resume_queue", "expire", "purge", "noop"}


class Reject(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _err(code: str) -> dict:
    return {"error": {"code": code}}


class ReferenceStore:
    def __init__(self) -> None:
        self.clock = 0
        self.jobs: dict[str, dict] = {}
        self.order: list[str] = []
        self.idem: dict[str, str] = {}
        self.paused: set[str] = set()
        self.totals = {"total_submits": 0, "total_acks": 0, "total_retries": 0, "total_dead": 0}

    # results are compared without error messages (wording is the indexed store's business)
    def apply(self, cmd: dict) -> dict:
        kind = cmd.get("kind")
        if kind not in KINDS:
            return _err("validation_error")
        saved = copy.deepcopy((self.clock, self.jobs, self.order, self.idem, self.paused, self.totals))
        self.clock = max(self.clock, cmd.get("now", 0))
        try:
            return getattr(self, "_" + kind)(cmd)
        except Reject as exc:
            self.clock, self.jobs, self.order, self.idem, self.paused, self.totals = saved
            return _err(exc.code)

    # ----- helpers ---------------------------------------------------------------------------------------------
    def _set(self, job: dict, state: str) -> None:
        job["state"] = state
        job["updated_at"] = self.clock

    def _waiting(self, job: dict) -> bool:
        if job["ignore_deps"]:
            return False
        return any(d in self.jobs and self.jobs[d]["state"] != "ACKED" for d in job["depends_on"])

    def _promote(self) -> int:
        count = 0
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            due = job["run_at"] <= self.clock
            if due and (job["state"] == "RETRY" or (job["state"] == "SCHEDULED" and not self._waiting(job))):
                self._set(job, "READY")
                count += 1
        return count

    def _cancel_waiting_on(self, failed: str) -> None:
        """Cancel every open job waiting on `failed`: its direct dependents first, then theirs (LIFO)."""
        stack = [failed]
        while stack:
            current = stack.pop()
            for job_id in sorted(self.jobs):
                job = self.jobs[job_id]
                if current in job["depends_on"] and job["state"] not in TERMINAL and not job["ignore_deps"]:
                    job["last_error"] = f"dependency {current} ended without being ACKED"
                    job["lease_until"] = job["lease_token"] = None
                    self._set(job, "CANCELLED")
                    stack.append(job_id)

    def _fail(self, job: dict, message: str, retry_in) -> None:
        job["last_error"] = message
        job["lease_until"] = job["lease_token"] = None
        if job["attempts"] >= 1 + job["max_retries"]:
            self.totals["total_dead"] += 1
            self._set(job, "DEAD")
            self._cancel_waiting_on(job["id"])
            return
        base, most = job["backoff"]
        delay = retry_in if retry_in is not None else retry_delay_ms(job["id"], job["attempts"], base, most)
        job["run_at"] = self.clock + delay
        self.totals["total_retries"] += 1
        self._set(job, "RETRY")

    def _running(self, cmd: dict) -> dict:
        job = self.jobs.get(cmd["job_id"])
        if job is None:
            raise Reject("not_found")
        token = cmd.get("lease_token")
        if job["state"] != "RUNNING" or job["lease_until"] <= self.clock:
            raise Reject("conflict")
        if token is not None and token != job["lease_token"]:
            raise Reject("conflict")
        return job

    # ----- commands --------------------------------------------------------------------------------------------
    def _one_job(self, spec: dict, batch_ids: set, batch_keys: dict):
        key = spec.get("idempotency_key")
        if key is not None and (key in self.idem or key in batch_keys):
            return None, self.idem.get(key) or batch_keys[key]
        if spec["job_id"] in self.jobs or spec["job_id"] in batch_ids:
            raise Reject("validation_error")
        for dep in spec.get("depends_on") or []:
            if dep in batch_ids:
                continue
            if dep not in self.jobs or self.jobs[dep]["state"] in ("DEAD", "CANCELLED"):
                raise Reject("validation_error")
        run_at = spec.get("run_at")
        if run_at is None:
            run_at = self.clock + (spec.get("delay_ms") or 0)
        backoff = spec.get("backoff") or {"base_ms": 1000, "max_ms": 300000}
        job = {"id": spec["job_id"], "queue": spec.get("queue", "default"), "state": None,
               "priority": spec.get("priority", 0), "run_at": run_at, "created_at": self.clock,
               "updated_at": self.clock, "attempts": 0, "max_retries": spec.get("max_retries", 3),
               "lease_ms": spec.get("lease_ms"), "lease_until": None, "lease_token": None, "worker_id": None,
               "payload": spec.get("payload", "null"), "result": None, "result_error": None, "last_error": None,
               "progress": None, "checkpoint": None, "tags": dict(spec.get("tags") or {}),
               "depends_on": list(spec.get("depends_on") or []), "idempotency_key": key,
               "backoff": (backoff["base_ms"], backoff["max_ms"]), "ignore_deps": False}
        return job, None

    def _add(self, job: dict) -> None:
        self.jobs[job["id"]] = job
        self.order.append(job["id"])
        if job["idempotency_key"] is not None:
            self.idem[job["idempotency_key"]] = job["id"]
        self.totals["total_submits"] += 1
        due = job["run_at"] <= self.clock
        self._set(job, "READY" if due and not self._waiting(job) else "SCHEDULED")

    def _submit(self, cmd: dict) -> dict:
        job, existing = self._one_job(cmd, set(), {})
        if existing is not None:
            j = self.jobs[existing]
            return {"job_id": existing, "state": j["state"], "created_at": j["created_at"], "run_at": j["run_at"],
                    "duplicate": True}
        self._add(job)
        return {"job_id": job["id"], "state": job["state"], "created_at": job["created_at"],
                "run_at": job["run_at"], "duplicate": False}

    def _submit_batch(self, cmd: dict) -> dict:
        if not cmd.get("jobs"):
            raise Reject("validation_error")
        plan, ids, keys = [], set(), {}
        for spec in cmd["jobs"]:
            job, existing = self._one_job(spec, ids, keys)
            if job is not None:
                ids.add(job["id"])
                if job["idempotency_key"] is not None:
                    keys[job["idempotency_key"]] = job["id"]
            plan.append((job, existing))
        out = {"job_ids": [], "states": [], "duplicates": []}
        for job, existing in plan:
            if job is not None:
                self._add(job)
            j = job or self.jobs[existing]
            out["job_ids"].append(j["id"])
            out["states"].append(j["state"])
            out["duplicates"].append(job is None)
        return out

    def _lease(self, cmd: dict) -> dict:
        self._promote()
        queues = set(cmd.get("queues") or [])
        ready = [j for j in self.jobs.values() if j["state"] == "READY" and j["queue"] not in self.paused
                 and (not queues or j["queue"] in queues)]
        ready.sort(key=lambda j: (-j["priority"], j["run_at"], j["created_at"], j["id"]))
        leased = []
        for i, job in enumerate(ready[:cmd.get("max_jobs", 1)]):
            job["attempts"] += 1
            job["lease_until"] = self.clock + (cmd.get("lease_ms") or job["lease_ms"] or cmd.get("default_lease_ms",
                                                                                                   30000))
            job["lease_token"] = f"{cmd['token_base']}.{i}"
            job["worker_id"] = cmd.get("worker_id")
            self._set(job, "RUNNING")
            leased.append({"job_id": job["id"], "payload": job["payload"], "queue": job["queue"],
                           "priority": job["priority"], "lease_until": job["lease_until"],
                           "lease_token": job["lease_token"], "attempt": job["attempts"],
                           "max_retries": job["max_retries"], "tags": dict(job["tags"]),
                           "checkpoint": job["checkpoint"], "progress": job["progress"]})
        return {"jobs": leased}

    def _ack(self, cmd: dict) -> dict:
        job = self._running(cmd)
        job["result"], job["result_error"] = cmd.get("result"), cmd.get("result_error")
        job["lease_until"] = job["lease_token"] = None
        self.totals["total_acks"] += 1
        self._set(job, "ACKED")
        for other_id in sorted(self.jobs):
            other = self.jobs[other_id]
            if job["id"] in other["depends_on"] and other["state"] == "SCHEDULED" and not self._waiting(other) \
                    and other["run_at"] <= self.clock:
                self._set(other, "READY")
        return {"job_id": job["id"], "state": "ACKED"}

    def _ack_batch(self, cmd: dict) -> dict:
        if not cmd.get("acks"):
            raise Reject("validation_error")
        results = []
        for item in cmd["acks"]:
            try:
                results.append(self._ack(item))
            except Reject as exc:
                results.append({"job_id": item.get("job_id"), "error": {"code": exc.code}})
        return {"results": results}

    def _nack(self, cmd: dict) -> dict:
        job = self._running(cmd)
        self._fail(job, cmd.get("error", ""), cmd.get("retry_in_ms"))
        return {"job_id": job["id"], "state": job["state"], "run_at": job["run_at"]}

    def _release(self, cmd: dict) -> dict:
        if not isinstance(cmd.get("lease_token"), str):
            raise Reject("validation_error")
        job = self._running(cmd)
        job["lease_until"] = job["lease_token"] = None
        job["attempts"] -= 1
        self._set(job, "READY")
        return {"job_id": job["id"], "state": "READY", "attempts": job["attempts"]}

    def _extend(self, cmd: dict) -> dict:
        job = self._running(cmd)
        job["lease_until"] = self.clock + cmd["lease_ms"]
        if cmd.get("progress") is not None:
            job["progress"] = cmd["progress"]
        if cmd.get("checkpoint") is not None:
            job["checkpoint"] = cmd["checkpoint"]
        job["updated_at"] = self.clock
        return {"job_id": job["id"], "lease_until": job["lease_until"]}

    def _cancel(self, cmd: dict) -> dict:
        job = self.jobs.get(cmd["job_id"])
        if job is None:
            raise Reject("not_found")
        if job["state"] in TERMINAL:
            raise Reject("conflict")
        if cmd.get("reason") is not None:
            job["last_error"] = cmd["reason"]
        job["lease_until"] = job["lease_token"] = None
        self._set(job, "CANCELLED")
        self._cancel_waiting_on(job["id"])
        return {"job_id": job["id"], "state": "CANCELLED"}

    def _redrive(self, job: dict, reset: bool) -> None:
        if reset:
            job["attempts"] = 0
        elif job["attempts"] >= 1 + job["max_retries"]:
            job["max_retries"] = job["attempts"]
        job["run_at"] = self.clock
        job["result"] = job["result_error"] = None
        job["lease_until"] = job["lease_token"] = None
        job["ignore_deps"] = True
        self._set(job, "READY")

    def _retry(self, cmd: dict) -> dict:
        job = self.jobs.get(cmd["job_id"])
        if job is None:
            raise Reject("not_found")
        if job["state"] not in ("DEAD", "CANCELLED"):
            raise Reject("conflict")
        self._redrive(job, bool(cmd.get("reset_attempts")))
        return {"job_id": job["id"], "state": "READY"}

    def _retry_dead(self, cmd: dict) -> dict:
        queue = cmd.get("queue")
        dead = [j for j in self.jobs.values() if j["state"] == "DEAD" and (queue is None or j["queue"] == queue)]
        for job in dead:
            self._redrive(job, False)
        return {"count": len(dead)}

    def _pause_queue(self, cmd: dict) -> dict:
        self.paused.add(cmd["queue"])
        return {"queue": cmd["queue"], "paused": True}

    def _resume_queue(self, cmd: dict) -> dict:
        self.paused.discard(cmd["queue"])
        return {"queue": cmd["queue"], "paused": False}

    def _expire(self, cmd: dict) -> dict:
        due = [j for j in self.jobs.values() if j["state"] == "RUNNING" and j["lease_until"] <= self.clock]
        due.sort(key=lambda j: (j["lease_until"], j["id"]))
        for job in due:
            if job["state"] == "RUNNING":  # an earlier expiry's cascade may have cancelled it
                self._fail(job, "lease expired", None)
        dead = sum(1 for j in due if j["state"] == "DEAD")
        return {"expired": len(due), "dead": dead, "promoted": self._promote()}

    def _purge(self, cmd: dict) -> dict:
        cutoff = self.clock - cmd["retention_ms"]
        doomed = [j for j in self.jobs.values() if j["state"] in TERMINAL and j["updated_at"] <= cutoff]
        for job in doomed:
            del self.jobs[job["id"]]
            self.order.remove(job["id"])
            if job["idempotency_key"] is not None and self.idem.get(job["idempotency_key"]) == job["id"]:
                del self.idem[job["idempotency_key"]]
        return {"purged": len(doomed)}

    def _noop(self, cmd: dict) -> dict:
        return {}

    # ----- reads -----------------------------------------------------------------------------------------------
    def view(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        out = {k: v for k, v in job.items() if k not in ("id", "ignore_deps", "backoff")}
        out["job_id"] = job["id"]
        return out

    def by_state(self) -> dict:
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs.values():
            counts[job["state"]] += 1
        return counts

    def next_due(self) -> int | None:
        times = [j["lease_until"] for j in self.jobs.values() if j["state"] == "RUNNING"]
        times += [j["run_at"] for j in self.jobs.values()
                  if j["state"] == "RETRY" or (j["state"] == "SCHEDULED" and not self._waiting(j))]
        return min(times) if times else None

    def newest_first(self, state: str | None, queue: str | None) -> list[str]:
        jobs = [j for j in self.jobs.values() if (state is None or j["state"] == state)
                and (queue is None or j["queue"] == queue)]
        jobs.sort(key=lambda j: (j["created_at"], j["id"]), reverse=True)
        return [j["id"] for j in jobs]
