"""The OpenAPI 3 description of the HTTP API, served at GET /openapi.json (open: no key needed).

Kept next to the routes it describes and checked against them: tests fuzz a live cluster with schemathesis,
which fails on any response that does not match what is written here.
"""
from __future__ import annotations

from raftqueue import __version__

STATES = ["SCHEDULED", "READY", "RUNNING", "RETRY", "ACKED", "DEAD", "CANCELLED"]
ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.:-]+$"}
QUEUE = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_.:-]+$"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
ANY = {}  # any JSON value
TAGS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 256}, "maxProperties": 32}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    out = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


ERROR_BODY = _obj({"code": {"type": "string"}, "message": {"type": "string"}}, ["code", "message"])
KEY_PROPERTIES = {"key_id": {"type": "string"}, "name": {"type": "string"}, "owner_id": {"type": "string"},
                  "type": {"type": "string", "enum": ["client", "worker", "admin"]},
                  "scopes": {"type": "array", "items": {"type": "string"}}, "created_at": TIME,
                  "revoked_at": NULLABLE_TIME, "last_used_at": NULLABLE_TIME}
KEY_REQUIRED = ["key_id", "name", "owner_id", "type", "scopes", "created_at"]

SCHEMAS = {
    "Error": _obj({"error": ERROR_BODY}, ["error"]),
    "JobSpec": _obj({
        "payload": ANY, "queue": QUEUE, "priority": {"type": "integer", "minimum": -2147483647, "maximum": 2147483647},
        "run_at": TIME, "delay_ms": {"type": "integer", "minimum": 0, "maximum": 31622400000},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": 1000},
        "lease_ms": {"type": "integer", "minimum": 100, "maximum": 43200000},
        "backoff": _obj({"base_ms": {"type": "integer", "minimum": 1}, "max_ms": {"type": "integer", "minimum": 1}}),
        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 256}, "tags": TAGS,
        "depends_on": {"type": "array", "items": ID, "maxItems": 100}}, ["payload"]),
    "SubmitResult": _obj({"job_id": {"type": "string"}, "state": {"type": "string", "enum": STATES},
                          "created_at": TIME, "run_at": TIME}, ["job_id", "state", "created_at", "run_at"]),
    "LeasedJob": _obj({
        "job_id": {"type": "string"}, "payload": ANY, "queue": {"type": "string"}, "priority": {"type": "integer"},
        "lease_until": TIME, "lease_token": {"type": "string"}, "attempt": {"type": "integer"},
        "max_retries": {"type": "integer"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "checkpoint": ANY, "progress": {"type": "integer"}},
        ["job_id", "payload", "queue", "priority", "lease_until", "lease_token", "attempt", "max_retries", "tags"]),
    "Job": _obj({
        "job_id": {"type": "string"}, "queue": {"type": "string"}, "state": {"type": "string", "enum": STATES},
        "priority": {"type": "integer"}, "attempts": {"type": "integer"}, "max_retries": {"type": "integer"},
        "lease_ms": {"type": "integer"}, "payload": ANY, "created_at": TIME, "updated_at": TIME, "run_at": TIME,
        "lease_until": TIME, "worker_id": {"type": "string"}, "result": ANY, "result_error": {"type": "string"},
        "last_error": {"type": "string"}, "progress": {"type": "integer"}, "checkpoint": ANY,
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "depends_on": {"type": "array", "items": {"type": "string"}}, "idempotency_key": {"type": "string"}},
        ["job_id", "queue", "state", "priority", "attempts", "max_retries", "payload", "created_at", "updated_at",
         "run_at", "tags", "depends_on"]),
    "JobState": _obj({"job_id": {"type": "string"}, "state": {"type": "string", "enum": STATES}},
                     ["job_id", "state"]),
    "Key": _obj(KEY_PROPERTIES, KEY_REQUIRED),
    "KeyCreated": _obj({**KEY_PROPERTIES, "key": {"type": "string"}}, KEY_REQUIRED + ["key"]),
}

MEMBER = _obj({"id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
               "raft_addr": {"type": "string", "minLength": 3, "maxLength": 300},
               "http_addr": {"type": "string", "minLength": 10, "maxLength": 300}},
              ["id", "raft_addr", "http_addr"])
MEMBERS_ANSWER = _obj({"member": MEMBER, "members": {"type": "array", "items": MEMBER}}, ["member", "members"])

ERRORS = {"4XX": {"description": "a client error", "content": {"application/json": {"schema": ref("Error")}}},
          "501": {"description": "not supported: the leader runs an older build that cannot apply this write",
                  "content": {"application/json": {"schema": ref("Error")}}},
          "503": {"description": "no leader (retry)", "content": {"application/json": {"schema": ref("Error")}}},
          "504": {"description": "commit timeout: retry with the idempotency key",
                  "content": {"application/json": {"schema": ref("Error")}}}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def op(summary: str, responses: dict, body: dict | None = None, params: list | None = None,
       secured: bool = True, body_required: bool = True) -> dict:
    out: dict = {"summary": summary, "responses": {**responses, **ERRORS}}
    if body is not None:
        out["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if params:
        out["parameters"] = params
    if not secured:
        out["security"] = []
    return out


JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": ID}
READ_PARAMS = [{"name": "consistency", "in": "query", "schema": {"type": "string",
                                                                 "enum": ["stale", "leader", "linearizable"]}},
               {"name": "min_index", "in": "query", "schema": {"type": "integer", "minimum": 0}}]
TOKEN_BODY = _obj({"lease_token": {"type": "string", "maxLength": 128}})


def document() -> dict:
    paths = {
        "/jobs": {
            "post": op("Submit a job", {"201": _json(ref("SubmitResult"), "created"),
                                        "200": _json(ref("SubmitResult"), "an idempotent repeat: the first job")},
                       ref("JobSpec")),
            "get": op("List jobs, newest first", {"200": _json(_obj({
                "jobs": {"type": "array", "items": ref("Job")}, "next_cursor": {"type": "string", "nullable": True}},
                ["jobs", "next_cursor"]))}, params=READ_PARAMS + [
                {"name": "state", "in": "query", "schema": {"type": "string", "enum": STATES}},
                {"name": "queue", "in": "query", "schema": QUEUE},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 256}}]),
        },
        "/jobs/batch": {"post": op("Submit up to 1,000 jobs in one Raft entry, all or nothing",
                                   {"201": _json(_obj({"job_ids": {"type": "array", "items": {"type": "string"}}},
                                                      ["job_ids"]), "created")},
                                   _obj({"jobs": {"type": "array", "items": ref("JobSpec"), "minItems": 1,
                                                  "maxItems": 1000}}, ["jobs"]))},
        "/jobs/lease": {"post": op("Lease jobs (long-poll with wait_ms)", {
            "200": _json({"oneOf": [ref("LeasedJob"), _obj({"jobs": {"type": "array", "items": ref("LeasedJob")}},
                                                            ["jobs"])]})},
            _obj({"queue": QUEUE, "queues": {"type": "array", "items": QUEUE, "maxItems": 64},
                  "max_jobs": {"type": "integer", "minimum": 1, "maximum": 100},
                  "lease_ms": {"type": "integer", "minimum": 100, "maximum": 43200000},
                  "wait_ms": {"type": "integer", "minimum": 0, "maximum": 30000},
                  "worker_id": {"type": "string", "maxLength": 128}}), body_required=False)},
        "/jobs/ack": {"post": op("Ack up to 1,000 jobs; per-item results", {"200": _json(_obj({"results": {
            "type": "array", "items": {"oneOf": [ref("JobState"), _obj({"job_id": {"type": "string", "nullable": True},
                                                                        "error": ERROR_BODY},
                                                                       ["job_id", "error"])]}}}, ["results"]))},
            _obj({"acks": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _obj({
                "job_id": ID, "lease_token": {"type": "string", "maxLength": 128}, "result": ANY,
                "result_error": {"type": "string", "maxLength": 8192}}, ["job_id"])}}, ["acks"]))},
        "/jobs/dead/retry": {"post": op("Redrive every DEAD job (of a queue)",
                                        {"200": _json(_obj({"count": {"type": "integer"}}, ["count"]))},
                                        _obj({"queue": QUEUE}), body_required=False)},
        "/jobs/{job_id}": {"get": op("One job", {"200": _json(ref("Job"))}, params=[JOB_ID_PARAM] + READ_PARAMS)},
        "/jobs/{job_id}/ack": {"post": op("Finish a job", {"200": _json(ref("JobState"))}, _obj({
            "lease_token": {"type": "string", "maxLength": 128}, "result": ANY,
            "result_error": {"type": "string", "maxLength": 8192}}), [JOB_ID_PARAM], body_required=False)},
        "/jobs/{job_id}/nack": {"post": op("Give a job back: retry after its backoff, or DEAD", {"200": _json(_obj({
            "job_id": {"type": "string"}, "state": {"type": "string", "enum": STATES}, "run_at": NULLABLE_TIME},
            ["job_id", "state"]))}, _obj({"lease_token": {"type": "string", "maxLength": 128},
                                          "error": {"type": "string", "maxLength": 8192},
                                          "retry_in_ms": {"type": "integer", "minimum": 0, "maximum": 31622400000}}),
            [JOB_ID_PARAM], body_required=False)},
        "/jobs/{job_id}/release": {"post": op(
            "Give a leased job back unfinished (worker shutdown): READY at once, the attempt not counted",
            {"200": _json(_obj({"job_id": {"type": "string"}, "state": {"type": "string", "enum": STATES},
                                "attempts": {"type": "integer", "minimum": 0}}, ["job_id", "state", "attempts"]))},
            _obj({"lease_token": {"type": "string", "maxLength": 128}}, ["lease_token"]), [JOB_ID_PARAM])},
        "/jobs/{job_id}/extend": {"post": op("Extend a lease; report progress and a checkpoint", {"200": _json(_obj({
            "job_id": {"type": "string"}, "lease_until": TIME}, ["job_id", "lease_until"]))}, _obj({
                "lease_token": {"type": "string", "maxLength": 128},
                "lease_ms": {"type": "integer", "minimum": 100, "maximum": 43200000},
                "progress": {"type": "integer", "minimum": 0, "maximum": 100}, "checkpoint": ANY}),
            [JOB_ID_PARAM], body_required=False)},
        "/jobs/{job_id}/cancel": {"post": op("Cancel a job (a RUNNING job's lease is revoked)",
                                             {"200": _json(ref("JobState"))},
                                             _obj({"reason": {"type": "string", "maxLength": 8192}}), [JOB_ID_PARAM],
                                             body_required=False)},
        "/jobs/{job_id}/retry": {"post": op("Redrive a DEAD or CANCELLED job", {"200": _json(ref("JobState"))},
                                            _obj({"reset_attempts": {"type": "boolean"}}), [JOB_ID_PARAM],
                                            body_required=False)},
        "/queues/{name}/pause": {"post": op("Stop leasing from a queue", {"200": _json(_obj({
            "queue": {"type": "string"}, "paused": {"type": "boolean"}}, ["queue", "paused"]))},
            params=[{"name": "name", "in": "path", "required": True, "schema": QUEUE}])},
        "/queues/{name}/resume": {"post": op("Lease from a queue again", {"200": _json(_obj({
            "queue": {"type": "string"}, "paused": {"type": "boolean"}}, ["queue", "paused"]))},
            params=[{"name": "name", "in": "path", "required": True, "schema": QUEUE}])},
        "/health": {"get": op("The process is up", {"200": {"description": "OK",
                                                            "content": {"text/plain": {"schema": {"type": "string"}}}}},
                              secured=False)},
        "/live": {"get": op("Liveness", {"200": _json(_obj({"status": {"type": "string"}}, ["status"]))},
                            secured=False)},
        "/ready": {"get": op("Readiness: knows a leader and has applied its commit index", {
            "200": _json(_obj({"ready": {"type": "boolean"}, "role": {"type": "string"},
                               "leader": {"type": "string", "nullable": True}, "applied_index": {"type": "integer"}},
                              ["ready", "role", "leader", "applied_index"]))}, secured=False)},
        "/stats": {"get": op("Totals by state and queue", {"200": _json({
            "type": "object", "required": ["total", "by_state", "by_queue", "runnable", "scheduled", "total_submits",
                                           "total_acks", "total_retries", "total_dead"],
            "properties": {"total": {"type": "integer"}, "by_state": {"type": "object"},
                           "by_queue": {"type": "object"}}})}, params=READ_PARAMS)},
        "/cluster": {"get": op("This node's view of the cluster", {"200": _json({
            "type": "object", "required": ["node_id", "role", "leader", "term", "commit_index", "applied_index",
                                           "members"],
            "properties": {"members": {"type": "array", "items": {"type": "object"}},
                           "state_digest": {"type": "string"}}})}, params=[
            {"name": "digest", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}])},
        "/cluster/nodes": {"get": op("Every member's /cluster, asked by this node", {"200": _json(_obj({
            "asked_by": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "object"}}},
            ["asked_by", "nodes"]))})},
        "/cluster/members": {"post": op("Add a started node to the cluster (admin; one change at a time; it catches "
                                        "up with the log without a vote first)", {
            "200": _json(MEMBERS_ANSWER, "already a member with these addresses: nothing changed"),
            "202": _json(_obj({"member": MEMBER, "members": {"type": "array", "items": MEMBER},
                               "catching_up": {"type": "object"}}, ["member", "members", "catching_up"]),
                         "still catching up after --catch-up-wait (20 s): the leader adds it once it has"),
            "201": _json(MEMBERS_ANSWER, "added")}, MEMBER)},
        "/cluster/members/{member_id}": {"delete": op("Remove a node (admin; the leader hands over first), or cancel "
                                                      "the add of one still catching up", {
            "200": _json(_obj({"removed": {"type": "string"}, "members": {"type": "array", "items": MEMBER},
                               "was_catching_up": {"type": "boolean"}}, ["removed", "members"]))},
            params=[{"name": "member_id", "in": "path", "required": True, "schema": ID}])},
        "/metrics": {"get": op("Prometheus metrics (an admin key, or open with --metrics-open)", {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/admin/keys": {
            "post": op("Create an API key (the secret is shown once)", {"201": _json(ref("KeyCreated"), "created")},
                       _obj({"name": {"type": "string", "minLength": 1, "maxLength": 256},
                             "owner_id": {"type": "string", "minLength": 1, "maxLength": 256},
                             "type": {"type": "string", "enum": ["client", "worker", "admin"]}},
                            ["name", "owner_id", "type"])),
            "get": op("Every API key (no secrets)", {"200": _json({"type": "array", "items": ref("Key")})}),
        },
        "/keys": {"get": op("Your API keys (no secrets)", {"200": _json({"type": "array", "items": ref("Key")})})},
        "/keys/{key_id}": {"delete": op("Revoke a key (your owner's, except admin keys; or any as admin)", {
            "200": _json(_obj({"message": {"type": "string"}, "key": {"type": "string"}, "key_id": {"type": "string"},
                               "revoked_at": TIME}, ["message", "key", "key_id", "revoked_at"]))},
            params=[{"name": "key_id", "in": "path", "required": True,
                     "schema": {"type": "string", "maxLength": 600}}])},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "raftqueue", "version": __version__,
                 "description": "A replicated job queue. Any node takes any request; writes go to the Raft leader."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
